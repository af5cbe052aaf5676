// Paid deliveries end to end: the real MessageBoxClient (@bsv/message-box-client 2.1.1) on a
// funded wallet-toolbox Wallet pays the server under test, which internalizes the delivery
// fee at the real wallet storage (storage.mjs) that WALLET_STORAGE_URL names. The storage's
// own database is read to see what it credited to the server's identity.
//
//   node paid_send.mjs --url http://127.0.0.1:PORT --server-identity <66 hex> \
//     --storage-db <storage.mjs's --db> --roots <storage.mjs's --roots> --workdir <dir> \
//     --suite main|refusals
//
// main:     a send to `notifications` (delivery fee 10, recipient fee 10) with
//           `checkPermissions: true` is stored and its fee credited; a payment the storage
//           refuses (its chain does not know the proof's block) is the original's 500 with
//           the storage's text, nothing stored; with the storage stopped
//           (`@@CONTROL storage-stop`) a paid send is answered 503 at once and nothing is
//           stored; after `@@CONTROL storage-start` paid sends work again, the server having
//           re-established its storage session by itself.
// refusals: too little, a fee output paying another key, and the same payment twice are
//           refused, and the storage credits nothing for them.
//
// No network: the chain services are stand-ins (chain.mjs) and fetch refuses any origin but
// the server under test.

import { createRequire } from 'node:module'
import { join } from 'node:path'
import { format } from 'node:util'
import { Checks, control, expect, expectEqual, installNetworkTripwire, parseArgs, postJson } from '../interop/lib.mjs'
import { ChainStandIn, addRoot, readRoots } from './chain.mjs'

const args = parseArgs({
  url: { required: true },
  'server-identity': { required: true },
  'storage-db': { required: true },
  roots: { required: true },
  workdir: { required: true },
  suite: { required: true }
})
const url = args.url.replace(/\/+$/, '')
const serverKey = args['server-identity']
installNetworkTripwire(new URL(url).origin)

const require = createRequire(import.meta.url)
const { PrivateKey, ProtoWallet, CachedKeyDeriver, Transaction, P2PKH, MerklePath, UnlockingScript, PublicKey, Utils, Random } =
  require('@bsv/sdk')
const { Wallet, WalletStorageManager, StorageKnex } = require('@bsv/wallet-toolbox')
const knexLib = require('knex')
const Database = require('better-sqlite3')
const { MessageBoxClient } = await import('@bsv/message-box-client')

// message-box-client logs whole responses; keep the log readable.
for (const level of ['log', 'warn', 'error']) {
  console[level] = (...a) => process.stdout.write(`  [client ${level}] ${format(...a).replace(/\s+/g, ' ').slice(0, 160)}\n`)
}

const t = new Checks(`paid_send_${args.suite}`, { totalTimeoutMs: 150_000 })
const BRC29 = [2, '3241645161d8']

/** What the storage credited to the server's identity: its outputs, oldest first. */
function serverOutputs () {
  const db = new Database(args['storage-db'], { readonly: true, fileMustExist: true })
  try {
    return db.prepare(`select o.txid, o.vout, o.satoshis, o.spendable, o.change, o.type, o.senderIdentityKey,
        o.derivationPrefix, o.derivationSuffix, b.name as basket, t.status as txStatus
      from outputs o join users u on u.userId = o.userId
      left join output_baskets b on b.basketId = o.basketId
      left join transactions t on t.transactionId = o.transactionId
      where u.identityKey = ? order by o.outputId`).all(serverKey)
  } finally {
    db.close()
  }
}

function client (walletClient) {
  const c = new MessageBoxClient({ host: url, walletClient, networkPreset: 'local' })
  c.lookupResolver.query = async () => { throw new Error('tripwire: overlay lookup') }
  return c
}

/**
 * A wallet-toolbox Wallet on its own SQLite storage, as a MessageBox user runs one. Its
 * chain services know the shared roots and those of `ownRoots` (unknown to the storage).
 */
async function toolboxWallet (name, ownRoots) {
  const chain = new ChainStandIn('main', [args.roots, ownRoots].filter(f => f != null))
  const root = PrivateKey.fromRandom()
  const knex = knexLib({ client: 'better-sqlite3', connection: { filename: join(args.workdir, `${name}.sqlite`) }, useNullAsDefault: true })
  const storage = new StorageKnex({ ...StorageKnex.createStorageBaseOptions('main'), knex })
  await storage.migrate(`${name} storage`, PrivateKey.fromRandom().toPublicKey().toString())
  await storage.makeAvailable()
  storage.setServices(chain)
  const keyDeriver = new CachedKeyDeriver(root)
  const wallet = new Wallet({ chain: 'main', keyDeriver, storage: new WalletStorageManager(keyDeriver.identityKey, storage), services: chain })
  // The transactions the client makes, to find the one a send paid with.
  wallet.created = []
  const createAction = wallet.createAction.bind(wallet)
  wallet.createAction = async (a, o) => { const r = await createAction(a, o); wallet.created.push(r); return r }
  return { wallet, key: keyDeriver.identityKey, knex, client: client(wallet) }
}

/**
 * Funds `who` with a mined 100000-sat BRC-29 payment whose block root is registered in
 * `rootsFile` (by default the one the storage reads too).
 */
async function fund (who, rootsFile = args.roots) {
  const funder = PrivateKey.fromRandom()
  const prefix = Utils.toBase64(Random(32))
  const suffix = Utils.toBase64(Random(32))
  const { publicKey } = await new ProtoWallet(funder).getPublicKey({ protocolID: BRC29, keyID: `${prefix} ${suffix}`, counterparty: who.key })
  const tx = new Transaction(1, [{ sourceTXID: Utils.toHex(Random(32)), sourceOutputIndex: 0, unlockingScript: UnlockingScript.fromHex('51'), sequence: 0xffffffff }],
    [{ lockingScript: new P2PKH().lock(PublicKey.fromString(publicKey).toAddress()), satoshis: 100000 }], 0)
  // A height no roots file uses yet: a tracker takes the first file's root for a height, so
  // a stranger's block at the payer's height would be refused by the stranger's own wallet.
  const taken = new Set([args.roots, rootsFile].flatMap(f => Object.keys(readRoots(f))).map(Number))
  let height = 800 + Math.floor(Math.random() * 100)
  while (taken.has(height)) height++
  tx.merklePath = new MerklePath(height, [[{ offset: 0, hash: tx.id('hex'), txid: true }, { offset: 1, hash: Utils.toHex(Random(32)) }]])
  addRoot(rootsFile, height, tx.merklePath.computeRoot(tx.id('hex')))
  const r = await who.wallet.internalizeAction({
    tx: tx.toAtomicBEEF(),
    outputs: [{ outputIndex: 0, protocol: 'wallet payment', paymentRemittance: { derivationPrefix: prefix, derivationSuffix: suffix, senderIdentityKey: funder.toPublicKey().toString() } }],
    description: 'fund the test sender'
  })
  expect(r.accepted === true, `funding not accepted: ${JSON.stringify(r)}`)
}

/**
 * A payment built as MessageBoxClient.createMessagePayment builds it, with the delivery
 * output's amount and counterparty open to change: [delivery fee to the server, recipient fee].
 */
async function payment (who, recipient, { deliverySats = 10, payTo = serverKey } = {}) {
  const prefix = Utils.toBase64(Random(32))
  const suffix = Utils.toBase64(Random(32))
  const { publicKey } = await who.wallet.getPublicKey({ protocolID: BRC29, keyID: `${prefix} ${suffix}`, counterparty: payTo })
  const rPrefix = Utils.toBase64(Random(32))
  const rSuffix = Utils.toBase64(Random(32))
  const anyone = new ProtoWallet('anyone')
  const { publicKey: rKey } = await anyone.getPublicKey({ protocolID: BRC29, keyID: `${rPrefix} ${rSuffix}`, counterparty: recipient })
  const { tx } = await who.wallet.createAction({
    description: 'MessageBox delivery payment',
    outputs: [
      { satoshis: deliverySats, lockingScript: new P2PKH().lock(PublicKey.fromString(publicKey).toAddress()).toHex(), outputDescription: 'MessageBox server delivery fee' },
      { satoshis: 10, lockingScript: new P2PKH().lock(PublicKey.fromString(rKey).toAddress()).toHex(), outputDescription: 'Recipient message fee' }
    ],
    options: { randomizeOutputs: false, acceptDelayedBroadcast: false }
  })
  return {
    tx,
    outputs: [
      { outputIndex: 0, protocol: 'wallet payment', paymentRemittance: { derivationPrefix: prefix, derivationSuffix: suffix, senderIdentityKey: who.key } },
      { outputIndex: 1, protocol: 'wallet payment', paymentRemittance: { derivationPrefix: rPrefix, derivationSuffix: rSuffix, senderIdentityKey: (await anyone.getPublicKey({ identityKey: true })).publicKey } }
    ],
    description: 'MessageBox delivery payment'
  }
}

async function send (who, recipient, messageId, pay) {
  const body = { message: { recipient, messageBox: 'notifications', body: `paid ${messageId}`, messageId }, payment: pay }
  const started = Date.now()
  const { res, json } = await postJson(who.client.authFetch, `${url}/sendMessage`, body).catch(e => {
    throw new Error(`sendMessage: ${e.message} (${e.cause?.message ?? e.cause})`)
  })
  return { status: res.status, json, ms: Date.now() - started }
}

async function notifications (who) {
  const { res, json } = await postJson(who.client.authFetch, `${url}/listMessages`, { messageBox: 'notifications' })
  expectEqual(res.status, 200, 'listMessages status')
  return json.messages.map(m => m.messageId)
}

/** Expects exactly one new credit since `before`: the delivery output of `txid`, from `sender`. */
function expectCredited (before, txid, sender) {
  const after = serverOutputs()
  const fresh = after.slice(before.length)
  expectEqual(fresh.length, 1, `new outputs credited to the server (${JSON.stringify(fresh)})`)
  const [o] = fresh
  expectEqual({ txid: o.txid, vout: o.vout, satoshis: o.satoshis, spendable: o.spendable, change: o.change, type: o.type, basket: o.basket, senderIdentityKey: o.senderIdentityKey },
    { txid, vout: 0, satoshis: 10, spendable: 1, change: 1, type: 'P2PKH', basket: 'default', senderIdentityKey: sender }, 'the credited output')
  expect(['unproven', 'completed'].includes(o.txStatus), `transaction status ${o.txStatus}`)
}

const payer = await toolboxWallet('payer')
const recipient = { wallet: new ProtoWallet(PrivateKey.fromRandom()) }
recipient.client = client(recipient.wallet)
recipient.key = (await recipient.wallet.getPublicKey({ identityKey: true })).publicKey
t.note(`server=${url} (${serverKey}) payer=${payer.key} recipient=${recipient.key}`)

await t.check('the sender is funded (toolbox wallet, mined funding)', async () => {
  await payer.client.init(url)
  await recipient.client.init(url)
  await fund(payer)
})

await t.check('quote: notifications cost 10 + 10, the delivery agent is the server', async () => {
  const q = await payer.client.getMessageBoxQuote({ recipient: recipient.key, messageBox: 'notifications' }, url)
  expectEqual(q, { recipientFee: 10, deliveryFee: 10, deliveryAgentIdentityKey: serverKey }, 'quote')
})

if (args.suite === 'main') {
  let before = serverOutputs()
  await t.check('MessageBoxClient.sendMessage to notifications (checkPermissions) is stored and its fee internalized', async () => {
    const r = await payer.client.sendMessage({ recipient: recipient.key, messageBox: 'notifications', body: { hello: 'paid' }, checkPermissions: true }, url)
    expectEqual(r.status, 'success', 'send status')
    const paid = payer.wallet.created.at(-1)
    expectCredited(before, paid.txid, payer.key)
    const listed = await recipient.client.listMessages({ messageBox: 'notifications', host: url })
    expect(listed.some(m => m.messageId === r.messageId && JSON.stringify(m.body).includes('paid')), `listed: ${JSON.stringify(listed)}`)
  }, { timeoutMs: 60_000 })

  await t.check("the storage's own refusal (a proof from a block it does not know) is the original's 500, nothing stored", async () => {
    // A sender whose coins come from a block only its own chain services know: every local
    // check passes, the storage's SPV check does not.
    const stranger = await toolboxWallet('stranger', join(args.workdir, 'stranger-roots.json'))
    await stranger.client.init(url)
    await fund(stranger, join(args.workdir, 'stranger-roots.json'))
    before = serverOutputs()
    const r = await send(stranger, recipient.key, 'unknown-block', await payment(stranger, recipient.key))
    expectEqual(r.json, { status: 'error', code: 'ERR_INTERNALIZE_FAILED', description: 'Failed to internalize payment: The tx parameter must be valid AtomicBEEF' }, 'answer')
    expectEqual(r.status, 500, 'status')
    expectEqual(serverOutputs().length, before.length, 'outputs credited to the server')
    expect(!(await notifications(recipient)).includes('unknown-block'), 'the message was stored')
    await stranger.knex.destroy()
  }, { timeoutMs: 60_000 })

  await t.check('storage stopped: a paid send is answered 503 ERR_PAYMENT_UNAVAILABLE at once, nothing stored', async () => {
    await control('storage-stop')
    before = serverOutputs()
    const r = await send(payer, recipient.key, 'while-down', await payment(payer, recipient.key))
    // (Its Retry-After header is not among the headers AuthFetch hands back: unsigned.)
    expectEqual([r.status, r.json], [503, { status: 'error', code: 'ERR_PAYMENT_UNAVAILABLE', description: 'The payment service is temporarily unavailable. Please retry later.' }], 'answer')
    expect(r.ms < 5000, `answered after ${r.ms} ms`)
    expect(!(await notifications(recipient)).includes('while-down'), 'the message was stored')
    // The real client reports it as a failed send.
    const e = await payer.client.sendMessage({ recipient: recipient.key, messageBox: 'notifications', body: 'x', checkPermissions: true }, url)
      .then(() => null, e => e)
    expect(e != null && /HTTP 503/.test(e.message), `MessageBoxClient: ${e?.message}`)
  }, { timeoutMs: 60_000 })

  await t.check('storage restarted: paid sends work again without restarting the server', async () => {
    await control('storage-start')
    expectEqual(serverOutputs().length, before.length, 'outputs credited while the storage was down')
    const r = await payer.client.sendMessage({ recipient: recipient.key, messageBox: 'notifications', body: { hello: 'again' }, checkPermissions: true }, url)
    expectEqual(r.status, 'success', 'send status')
    expectCredited(before, payer.wallet.created.at(-1).txid, payer.key)
  }, { timeoutMs: 60_000 })
} else {
  await t.check('too little: refused, nothing credited or stored', async () => {
    const before = serverOutputs()
    const r = await send(payer, recipient.key, 'too-little', await payment(payer, recipient.key, { deliverySats: 5 }))
    expect(r.status >= 400 && r.status < 500, `answer ${r.status} ${JSON.stringify(r.json)}`)
    expectEqual(serverOutputs().length, before.length, 'outputs credited to the server')
    expect(!(await notifications(recipient)).includes('too-little'), 'the message was stored')
  }, { timeoutMs: 60_000 })

  await t.check('a fee output paying another key: refused, nothing credited or stored', async () => {
    const before = serverOutputs()
    const other = PrivateKey.fromRandom().toPublicKey().toString()
    const r = await send(payer, recipient.key, 'other-key', await payment(payer, recipient.key, { payTo: other }))
    expect(r.status >= 400 && r.status < 500, `answer ${r.status} ${JSON.stringify(r.json)}`)
    expectEqual(serverOutputs().length, before.length, 'outputs credited to the server')
    expect(!(await notifications(recipient)).includes('other-key'), 'the message was stored')
  }, { timeoutMs: 60_000 })

  await t.check('the same payment twice: the second is ERR_PAYMENT_REPLAYED, credited once', async () => {
    const before = serverOutputs()
    const pay = await payment(payer, recipient.key)
    const first = await send(payer, recipient.key, 'replay-1', pay)
    expectEqual(first.status, 200, `first answer ${JSON.stringify(first.json)}`)
    const again = await send(payer, recipient.key, 'replay-2', pay)
    expectEqual([again.status, again.json.code], [409, 'ERR_PAYMENT_REPLAYED'], `second answer ${JSON.stringify(again.json)}`)
    expectCredited(before, payer.wallet.created.at(-1).txid, payer.key)
    const listed = await notifications(recipient)
    expect(listed.includes('replay-1') && !listed.includes('replay-2'), `listed ${listed}`)
  }, { timeoutMs: 60_000 })
}

await payer.knex.destroy()
t.finish()
