// Paid delivery with the real MessageBoxClient (@bsv/message-box-client 2.1.1): payments built
// exactly as the client builds them (its own BRC-29 derivation against the server key from
// the quote, outputs in its order) pass the server's local checks and reach the server's
// wallet once; the server refuses the same payment again, and an underpaid one without
// asking the wallet.
//
//   node paid_delivery.mjs --url http://127.0.0.1:PORT --server-identity <66 hex> --wallet-port <port>
//
// The server runs with PAYMENT_WALLET_URL=http://127.0.0.1:<wallet-port>; this script serves
// that wallet (`POST /internalizeAction`, recording every call and accepting it). The
// parties are ProtoWallets whose createAction builds a real AtomicBEEF with the @bsv/sdk: a
// parent transaction proven by a BUMP at height 900, and a child carrying the outputs the
// client asked for (no signatures: nothing checks scripts before a wallet broadcasts).

import { createServer } from 'node:http'
import { format } from 'node:util'
import { Checks, expectEqual, installNetworkTripwire, parseArgs, postJson } from './lib.mjs'

const args = parseArgs({
  url: { env: 'MB_URL', required: true },
  'server-identity': { env: 'MB_SERVER_IDENTITY', required: true },
  'wallet-port': { env: 'MB_WALLET_PORT', required: true }
})
const url = args.url.replace(/\/+$/, '')
const serverKey = args['server-identity']
const wire = installNetworkTripwire(new URL(url).origin)
const { ProtoWallet, PrivateKey, Transaction, MerklePath, P2PKH, LockingScript, UnlockingScript, Utils, Beef } = await import('@bsv/sdk')
const { MessageBoxClient } = await import('@bsv/message-box-client')

for (const level of ['log', 'warn', 'error']) {
  console[level] = (...a) => process.stdout.write(`  [client ${level}] ${format(...a).replace(/\s+/g, ' ').slice(0, 160)}\n`)
}

// --- the server's wallet ------------------------------------------------------------------

const internalized = []
const wallet = createServer((req, res) => {
  let body = ''
  req.on('data', c => { body += c })
  req.on('end', () => {
    res.setHeader('content-type', 'application/json')
    if (req.method === 'POST' && req.url === '/internalizeAction') {
      internalized.push(JSON.parse(body))
      res.end(JSON.stringify({ accepted: true, isMerge: false }))
    } else {
      res.statusCode = 404
      res.end(JSON.stringify({ isError: true, message: 'no such method' }))
    }
  })
})
await new Promise((resolve, reject) => wallet.listen(Number(args['wallet-port']), '127.0.0.1', resolve).on('error', reject))

// --- parties ------------------------------------------------------------------------------

const t = new Checks('paid_delivery')

async function party (name) {
  const key = PrivateKey.fromRandom()
  const w = new ProtoWallet(key)
  const calls = { createAction: [], internalizeAction: [] }
  w.createAction = async (a) => {
    calls.createAction.push(a)
    const parent = new Transaction(1, [{
      sourceTXID: Utils.toHex(Array.from(crypto.getRandomValues(new Uint8Array(32)))),
      sourceOutputIndex: 0,
      unlockingScript: UnlockingScript.fromHex('51'),
      sequence: 0xffffffff
    }], [{ lockingScript: new P2PKH().lock(key.toAddress()), satoshis: 100_000 }], 0)
    parent.merklePath = new MerklePath(900, [[{ offset: 0, hash: parent.id('hex'), txid: true }, { offset: 1, hash: 'cd'.repeat(32) }]])
    const child = new Transaction()
    child.addInput({ sourceTransaction: parent, sourceOutputIndex: 0, unlockingScript: UnlockingScript.fromHex('51'), sequence: 0xffffffff })
    for (const o of a.outputs) child.addOutput({ lockingScript: LockingScript.fromHex(o.lockingScript), satoshis: o.satoshis })
    return { txid: child.id('hex'), tx: child.toAtomicBEEF() }
  }
  w.internalizeAction = async (a) => { calls.internalizeAction.push(a); return { accepted: true } }
  const client = new MessageBoxClient({ host: url, walletClient: w, networkPreset: 'local' })
  client.lookupResolver.query = async () => { throw new Error('interop tripwire: overlay lookup') }
  await client.init(url)
  const identity = (await w.getPublicKey({ identityKey: true })).publicKey
  return { name, key: identity, calls, client }
}

const A = await party('A')
const B = await party('B')
const C = await party('C')
t.note(`A=${A.key} B=${B.key} C=${C.key} server=${url} (${serverKey})`)

const atomicTxid = (tx) => Beef.fromBinary(tx).atomicTxid

// --- checks -------------------------------------------------------------------------------

let firstPayment
await t.check('sendMessage to notifications with checkPermissions: paid, stored, internalized once', async () => {
  const r = await A.client.sendMessage({ recipient: B.key, messageBox: 'notifications', body: 'paid hello', checkPermissions: true, skipEncryption: true }, url)
  expectEqual(r.status, 'success', 'status')
  expectEqual(A.calls.createAction.length, 1, 'one payment built')
  expectEqual(A.calls.createAction[0].outputs.map(o => o.satoshis), [10, 10], 'delivery and recipient fee')
  expectEqual(internalized.length, 1, 'wallet calls')
  const asked = internalized[0]
  expectEqual(Object.keys(asked), ['tx', 'outputs', 'description'], 'internalizeAction arguments')
  expectEqual(asked.outputs.length, 1, 'only the delivery output')
  expectEqual([asked.outputs[0].outputIndex, asked.outputs[0].protocol, asked.outputs[0].paymentRemittance.senderIdentityKey], [0, 'wallet payment', A.key], 'delivery output')
  const { json } = await postJson(B.client.authFetch, `${url}/listMessages`, { messageBox: 'notifications' })
  const row = json.messages.find(m => m.messageId === r.messageId)
  const envelope = JSON.parse(row.body)
  expectEqual(envelope.message, 'paid hello', 'stored body')
  expectEqual(envelope.payment.outputs.length, 1, 'the recipient\'s own output is stored with it')
  firstPayment = { tx: asked.tx, outputs: [asked.outputs[0], envelope.payment.outputs[0]], description: asked.description }
})

await t.check('the same payment for another message: 409 ERR_PAYMENT_REPLAYED, the wallet not asked', async () => {
  const { res, json } = await postJson(A.client.authFetch, `${url}/sendMessage`, {
    message: { recipient: B.key, messageBox: 'notifications', body: 'free ride?', messageId: 'replay-1' },
    payment: firstPayment
  })
  expectEqual([res.status, json.code, json.description], [409, 'ERR_PAYMENT_REPLAYED', 'This payment was already used.'], 'answer')
  expectEqual(internalized.length, 1, 'wallet calls')
})

/** A payment the client builds for `quote`, sent as message `id`: refused as `expected`, and the wallet is not asked. */
async function refusedLocally (quote, id, expected) {
  const payment = await A.client.createMessagePayment(B.key, { recipientFee: 10, ...quote })
  const { res, json } = await postJson(A.client.authFetch, `${url}/sendMessage`, {
    message: { recipient: B.key, messageBox: 'notifications', body: id, messageId: id },
    payment
  })
  expectEqual([res.status, json.code, json.description], expected, 'answer')
  expectEqual(internalized.length, 1, 'wallet calls')
}

await t.check('an underpaid delivery (9 of 10): 400 ERR_INSUFFICIENT_PAYMENT, the wallet not asked', async () => {
  await refusedLocally({ deliveryFee: 9, deliveryAgentIdentityKey: serverKey }, 'cheap-1',
    [400, 'ERR_INSUFFICIENT_PAYMENT', 'The server delivery output does not pay the required amount.'])
})

await t.check('a payment derived for another server key: 400 ERR_INVALID_PAYMENT, the wallet not asked', async () => {
  const elsewhere = PrivateKey.fromRandom().toPublicKey().toString()
  await refusedLocally({ deliveryFee: 10, deliveryAgentIdentityKey: elsewhere }, 'lost-1',
    [400, 'ERR_INVALID_PAYMENT', 'The paymentRemittance parameter must be locked by script conforming to BRC-29'])
})

await t.check('multi-recipient send to notifications: the delivery fee once, as the client pays it', async () => {
  const r = await A.client.sendMesagetoRecepients({ recipients: [B.key, C.key], messageBox: 'notifications', body: 'to both' }, url)
  expectEqual([r.status, r.sent.map(s => s.recipient)], ['success', [B.key, C.key]], 'sent')
  expectEqual(A.calls.createAction.at(-1).outputs.map(o => o.satoshis), [10, 10, 10], 'one delivery output, two recipient outputs')
  expectEqual(internalized.length, 2, 'wallet calls')
  expectEqual(atomicTxid(internalized[1].tx) !== atomicTxid(internalized[0].tx), true, 'a new payment')
})

await t.check('no overlay lookup and no request to another origin', async () => {
  expectEqual(wire.refused, [], 'refused URLs')
})

wallet.close()
t.finish()
