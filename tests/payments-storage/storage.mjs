// The real wallet storage server: @bsv/wallet-toolbox's StorageServer over a local SQLite
// database (knex + better-sqlite3), with the stand-in chain services of chain.mjs. What the
// original MessageBox server's wallet talks to at WALLET_STORAGE_URL.
//
//   node storage.mjs --port P --db FILE --roots FILE --key <64 hex>
//
// Prints `READY <storage identity key>` once it answers on 127.0.0.1:P. Restarting it on the
// same database keeps every row and forgets every BRC-103 session, as a real restart does.

import { createRequire } from 'node:module'
import { ChainStandIn } from './chain.mjs'
import { parseArgs } from '../interop/lib.mjs'

const require = createRequire(import.meta.url)
const { PrivateKey, ProtoWallet } = require('@bsv/sdk')
const { StorageKnex, StorageServer } = require('@bsv/wallet-toolbox')
const knexLib = require('knex')

const args = parseArgs({ port: { required: true }, db: { required: true }, roots: { required: true }, key: { required: true } })
const root = PrivateKey.fromHex(args.key)
const identity = root.toPublicKey().toString()
const knex = knexLib({ client: 'better-sqlite3', connection: { filename: args.db }, useNullAsDefault: true })
const storage = new StorageKnex({ ...StorageKnex.createStorageBaseOptions('main'), knex })
await storage.migrate('messagebox test storage', identity)
await storage.makeAvailable()
storage.setServices(new ChainStandIn('main', args.roots))
const wallet = new ProtoWallet(root)
wallet.chain = 'main'
const server = new StorageServer(storage, { port: Number(args.port), wallet, monetize: false })
server.start()

for (let i = 0; ; i++) {
  try {
    if ((await fetch(`http://127.0.0.1:${args.port}/`)).ok) break
  } catch (e) {
    if (i > 200) throw e
  }
  await new Promise(resolve => setTimeout(resolve, 50))
}
console.log(`READY ${identity}`)
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0))
}
