// Identity keys spelt other than canonically (upper-case hex, uncompressed 04… form) with the
// real @bsv/message-box-client 2.1.1: a message addressed to any spelling of B's key lands in
// B's one box — listed by B and delivered live to B's listener — over HTTP and over the live
// channel; a permission set with an upper-case sender key applies to that sender.
//
//   node key_spellings.mjs --url http://127.0.0.1:PORT --server-identity <66 hex>

import { format } from 'node:util'
import { Checks, expect, expectEqual, installNetworkTripwire, parseArgs, withTimeout } from './lib.mjs'

const args = parseArgs({
  url: { env: 'MB_URL', required: true },
  'server-identity': { env: 'MB_SERVER_IDENTITY', required: true }
})
const url = args.url.replace(/\/+$/, '')
const wire = installNetworkTripwire(new URL(url).origin)
const { ProtoWallet, PrivateKey, PublicKey } = await import('@bsv/sdk')
const { MessageBoxClient } = await import('@bsv/message-box-client')

for (const level of ['log', 'warn', 'error']) {
  console[level] = (...a) => process.stdout.write(`  [client ${level}] ${format(...a).replace(/\s+/g, ' ').slice(0, 160)}\n`)
}

const t = new Checks('key_spellings', { totalTimeoutMs: 120_000 })
const closers = []

async function party (name) {
  const wallet = new ProtoWallet(PrivateKey.fromRandom())
  const client = new MessageBoxClient({ host: url, walletClient: wallet, networkPreset: 'local' })
  client.lookupResolver.query = async () => { throw new Error('interop tripwire: overlay lookup') }
  const key = (await wallet.getPublicKey({ identityKey: true })).publicKey
  await client.init(url)
  closers.push(() => client.disconnectWebSocket().catch(() => {}))
  return { name, wallet, client, key }
}

const A = await party('A')
const B = await party('B')
const upper = B.key.toUpperCase()
const uncompressed = PublicKey.fromString(B.key).encode(false, 'hex')
t.note(`B=${B.key} upper=${upper} uncompressed=${uncompressed.slice(0, 20)}…`)
expect(uncompressed.length === 130 && uncompressed.startsWith('04'), 'uncompressed spelling')

const box = 'spelled'
const received = []
const waiters = []
function nextLive (ms = 10_000) {
  if (received.length > 0) return Promise.resolve(received.shift())
  return withTimeout(new Promise((resolve) => waiters.push(resolve)), ms, 'a live message for B')
}

await t.check('B listens live on its box', async () => {
  await B.client.listenForLiveMessages({
    messageBox: box,
    overrideHost: url,
    onMessage: (m) => { const w = waiters.shift(); if (w != null) w(m); else received.push(m) }
  })
  await withTimeout(A.client.initializeConnection(url), 10_000, 'A initializeConnection')
})

const ids = []
for (const [how, recipient] of [['HTTP, upper-case key', upper], ['HTTP, uncompressed key', uncompressed]]) {
  await t.check(`${how}: stored in B's box and delivered live to B`, async () => {
    const r = await A.client.sendMessage({ recipient, messageBox: box, body: `via ${how}`, skipEncryption: true }, url)
    expectEqual(r.status, 'success', `send ${JSON.stringify(r)}`)
    const m = await nextLive()
    expectEqual([m.sender, m.messageId, m.body], [A.key, r.messageId, `via ${how}`], 'live message')
    ids.push(r.messageId)
  })
}

await t.check('live channel, upper-case room key: acked over the socket, delivered live to B', async () => {
  const r = await A.client.sendLiveMessage({ recipient: upper, messageBox: box, body: 'live upper', skipEncryption: true }, url)
  expectEqual(Object.keys(r).sort(), ['messageId', 'status'], `socket ack ${JSON.stringify(r)}`)
  expectEqual(r.status, 'success', 'ack')
  const m = await nextLive()
  expectEqual([m.sender, m.messageId, m.body], [A.key, r.messageId, 'live upper'], 'live message')
  ids.push(r.messageId)
})

await t.check('live channel, uncompressed key: the room is refused, the HTTP fallback stores it for B', async () => {
  const r = await A.client.sendLiveMessage({ recipient: uncompressed, messageBox: box, body: 'live uncompressed', skipEncryption: true }, url)
  expectEqual(r.status, 'success', `send ${JSON.stringify(r)}`)
  const m = await nextLive()
  expectEqual([m.sender, m.messageId, m.body], [A.key, r.messageId, 'live uncompressed'], 'live message')
  ids.push(r.messageId)
})

await t.check('B lists all four in its one box', async () => {
  const messages = await B.client.listMessages({ messageBox: box, host: url })
  expectEqual(messages.map(m => m.messageId).sort(), [...ids].sort(), 'listed ids')
  expect(messages.every(m => m.sender === A.key), 'sender is A')
  expectEqual(await B.client.acknowledgeMessage({ messageIds: ids, host: url }), 'success', 'ack')
})

await t.check('a permission set with an upper-case sender key blocks that sender, and the quote says so', async () => {
  await B.client.setMessageBoxPermission({ messageBox: box, sender: A.key.toUpperCase(), recipientFee: -1 }, url)
  const quote = await A.client.getMessageBoxQuote({ recipient: upper, messageBox: box }, url)
  expectEqual(quote.recipientFee, -1, `quote ${JSON.stringify(quote)}`)
  let refused = null
  try {
    await A.client.sendMessage({ recipient: B.key, messageBox: box, body: 'blocked', skipEncryption: true }, url)
  } catch (e) {
    refused = String(e?.message ?? e)
  }
  expect(refused != null && /HTTP 403/.test(refused), `refused: ${refused}`)
})

for (const close of closers) await close()
await t.check('no request left the server origin', async () => expectEqual(wire.refused, [], 'refused requests'))
t.finish()
