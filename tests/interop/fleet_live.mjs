// Live delivery across the nodes of a fleet (issue 11) with the real clients: a listener on
// node B (@bsv/message-box-client with its default transports, and a raw
// @bsv/authsocket-client on polling only) receives what other identities send through node A,
// over HTTP (sendMessage) and over A's WebSocket (sendLiveMessage). Run by tests/fleet_live.rs.
//
//   node fleet_live.mjs --listen-url http://127.0.0.1:B --send-url http://127.0.0.1:A --server-identity <66 hex>
//
// A delivery can only cross once node B subscribes to the listener's identity in Redis, which
// happens right after the socket authenticates; the script asks the harness to wait for that
// ("@@CONTROL subscribed <key>", answered after PUBSUB NUMSUB shows it) before sending.

import { format } from 'node:util'
import { Checks, Inbox, control, expect, expectEqual, installNetworkTripwire, parseArgs } from './lib.mjs'

const args = parseArgs({
  'listen-url': { env: 'MB_LISTEN_URL', required: true },
  'send-url': { env: 'MB_SEND_URL', required: true },
  'server-identity': { env: 'MB_SERVER_IDENTITY', required: true }
})
const listenUrl = args['listen-url'].replace(/\/+$/, '')
const sendUrl = args['send-url'].replace(/\/+$/, '')
installNetworkTripwire([new URL(listenUrl).origin, new URL(sendUrl).origin])
const { ProtoWallet, PrivateKey } = await import('@bsv/sdk')
const { MessageBoxClient } = await import('@bsv/message-box-client')
const { AuthSocketClient } = await import('@bsv/authsocket-client')

for (const level of ['log', 'warn', 'error']) {
  console[level] = (...a) => process.stdout.write(`  [client ${level}] ${format(...a).replace(/\s+/g, ' ').slice(0, 160)}\n`)
}

const t = new Checks('fleet_live', { totalTimeoutMs: 150_000 })
const closers = []

/** A new identity whose MessageBoxClient talks to `url`. */
async function party (name, url) {
  const wallet = new ProtoWallet(PrivateKey.fromRandom())
  const client = new MessageBoxClient({ host: url, walletClient: wallet, networkPreset: 'local' })
  client.lookupResolver.query = async () => { throw new Error('interop tripwire: overlay lookup') }
  const key = (await wallet.getPublicKey({ identityKey: true })).publicKey
  await client.init(url)
  const p = { name, wallet, client, key, url }
  closers.push(async () => { await client.disconnectWebSocket().catch(() => {}) })
  return p
}

const L = await party('L (listener, node B)', listenUrl)
const S = await party('S (sender, node A)', sendUrl)
const W = await party('W (live sender, node A)', sendUrl)
t.note(`listen=${listenUrl} send=${sendUrl} server=${args['server-identity']} L=${L.key}`)
const box = 'fleet_inbox'
const inbox = new Inbox()

await t.check('listenForLiveMessages on node B (default transports) and B subscribes to it', async () => {
  await L.client.listenForLiveMessages({ messageBox: box, overrideHost: listenUrl, onMessage: (m) => inbox.push(box, m) })
  await control(`subscribed ${L.key}`, 15_000)
})

const ids = []
await t.check('an HTTP sendMessage through node A is delivered live on node B', async () => {
  const r = await S.client.sendMessage({ recipient: L.key, messageBox: box, body: { via: 'http on A' } }, sendUrl)
  expectEqual(r.status, 'success', 'HTTP send')
  const m = await inbox.next(box)
  expectEqual([m.sender, m.messageId], [S.key, r.messageId], 'sender, messageId')
  expectEqual(JSON.parse(m.body), { via: 'http on A' }, 'decrypted body')
  ids.push(r.messageId)
})

await t.check('a sendLiveMessage over node A\'s WebSocket is acked there and delivered live on node B', async () => {
  const started = Date.now()
  const r = await W.client.sendLiveMessage({ recipient: L.key, messageBox: box, body: { via: 'ws on A' } }, sendUrl)
  // The socket ack (an HTTP fallback answers with `results` after a 10 s timeout).
  expectEqual(Object.keys(r).sort(), ['messageId', 'status'], `ack ${JSON.stringify(r)}`)
  expectEqual(r.status, 'success', 'ack status')
  expect(Date.now() - started < 9_000, 'no ack timeout')
  const m = await inbox.next(box)
  expectEqual([m.sender, m.messageId], [W.key, r.messageId], 'sender, messageId')
  expectEqual(JSON.parse(m.body), { via: 'ws on A' }, 'decrypted body')
  ids.push(r.messageId)
})

await t.check('each arrived once; both are listed on node B and acknowledged there', async () => {
  await new Promise((resolve) => setTimeout(resolve, 1000))
  expectEqual(inbox.pending(box), 0, 'nothing extra')
  const listed = await L.client.listMessages({ messageBox: box, host: listenUrl })
  expectEqual(listed.map(m => m.messageId).sort(), [...ids].sort(), 'listed')
  expectEqual(await L.client.acknowledgeMessage({ messageIds: ids, host: listenUrl }), 'success', 'acknowledged')
})

await t.check('a raw AuthSocketClient on polling only, on node B, receives a send made through node A', async () => {
  const P = await party('P (polling, node B)', listenUrl)
  const socket = AuthSocketClient(listenUrl, { wallet: P.wallet, managerOptions: { upgrade: false } })
  closers.push(async () => socket.disconnect())
  const events = new Inbox()
  for (const n of ['connect', 'authenticationSuccess', 'joinedRoom']) socket.on(n, (d) => events.push(n, d ?? null))
  const room = `${P.key}-${box}`
  socket.on(`sendMessage-${room}`, (d) => events.push('msg', d))
  await events.next('connect')
  expectEqual(socket.ioSocket.io.engine.transport.name, 'polling', 'transport')
  socket.emit('authenticated', { identityKey: P.key })
  expectEqual(await events.next('authenticationSuccess'), { status: 'success' }, 'authenticated')
  socket.emit('joinRoom', room)
  await events.next('joinedRoom')
  await control(`subscribed ${P.key}`, 15_000)
  const r = await S.client.sendMessage({ recipient: P.key, messageBox: box, body: 'plain over http on A', skipEncryption: true }, sendUrl)
  expectEqual(await events.next('msg'), { sender: S.key, messageId: r.messageId, body: 'plain over http on A' }, 'delivery')
  expectEqual(socket.ioSocket.io.engine.transport.name, 'polling', 'still polling')
  socket.disconnect()
}, { timeoutMs: 40_000 })

for (const close of closers) await close().catch(() => {})
t.finish()
