// The live channel (Socket.IO "authsocket", spec authsocket.md §5 and §7.4) with the real
// clients: @bsv/message-box-client 2.1.1 (initializeConnection, listenForLiveMessages,
// sendLiveMessage, joinRoom/leaveRoom) and the raw @bsv/authsocket-client 2.0.2, with
// ProtoWallet identities, against the server under test started with ENABLE_WEBSOCKETS=true.
//
//   node live.mjs --url http://127.0.0.1:PORT --server-identity <66 hex> [--restart]
//
// --restart: near the end, print "@@CONTROL restart" and wait for the harness to restart the
// server (same key, database and port), then check what the real clients do afterwards.
//
// Every wait is bounded; every socket is closed before the summary. No overlay: hosts are
// always given, the LookupResolver is a tripwire, fetch refuses any other origin.

import { format } from 'node:util'
import { Checks, Inbox, control, expect, expectEqual, installNetworkTripwire, parseArgs, withTimeout } from './lib.mjs'

const args = parseArgs({
  url: { env: 'MB_URL', required: true },
  'server-identity': { env: 'MB_SERVER_IDENTITY', required: true },
  restart: { env: 'MB_RESTART', flag: true }
})
const url = args.url.replace(/\/+$/, '')
const serverKey = args['server-identity']
const wire = installNetworkTripwire(new URL(url).origin)
const { ProtoWallet, PrivateKey } = await import('@bsv/sdk')
const { MessageBoxClient } = await import('@bsv/message-box-client')
const { AuthSocketClient } = await import('@bsv/authsocket-client')

for (const level of ['log', 'warn', 'error']) {
  console[level] = (...a) => process.stdout.write(`  [client ${level}] ${format(...a).replace(/\s+/g, ' ').slice(0, 160)}\n`)
}

const t = new Checks('live', { totalTimeoutMs: 280_000 })
const lookups = []
/** Everything that holds a socket open, closed before the summary. */
const closers = []
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

async function party (name) {
  const wallet = new ProtoWallet(PrivateKey.fromRandom())
  const client = new MessageBoxClient({ host: url, walletClient: wallet, networkPreset: 'local' })
  client.lookupResolver.query = async (q) => { lookups.push({ name, q }); throw new Error('interop tripwire: overlay lookup') }
  const key = (await wallet.getPublicKey({ identityKey: true })).publicKey
  await client.init(url)
  const p = { name, wallet, client, key, sockets: [] }
  closers.push(async () => { for (const s of p.sockets) s.disconnect(); await client.disconnectWebSocket().catch(() => {}) })
  return p
}

/** MessageBoxClient listener on `box` whose messages land in `inbox` under `box`. */
async function listen (p, box, inbox) {
  await p.client.listenForLiveMessages({ messageBox: box, overrideHost: url, onMessage: (m) => inbox.push(box, m) })
}

/** A raw AuthSocketClient recording the server events in `names` (each a queue of its data). */
function rawSocket (p, names, managerOptions) {
  const socket = AuthSocketClient(url, { wallet: p.wallet, managerOptions })
  p.sockets.push(socket)
  const inbox = new Inbox()
  for (const n of ['connect', 'disconnect', ...names]) socket.on(n, (d) => inbox.push(n, d))
  return { socket, inbox, io: socket.ioSocket }
}

/** Waits until nothing more arrives on `key` for `quietMs`, returning everything seen. */
async function settle (inbox, key, quietMs = 1500) {
  let n = -1
  while (n !== inbox.all(key).length) {
    n = inbox.all(key).length
    await sleep(quietMs)
  }
  return inbox.all(key)
}

const A = await party('A')
const B = await party('B')
const C = await party('C')
t.note(`A=${A.key} B=${B.key} C=${C.key} server=${url} (${serverKey})`)
const inboxA = new Inbox()
const inboxB = new Inbox()

// An idle raw socket, opened now and checked before the restart: the heartbeat keeps it
// (Engine.IO ping from the server, pong from the client; spec §2.8).
const idle = { started: Date.now(), pings: 0 }
{
  const I = await party('I')
  idle.party = I
  idle.raw = rawSocket(I, ['authenticationSuccess'])
  idle.raw.io.io.on('ping', () => idle.pings++)
}

// --- MessageBoxClient: live send, live receive, persistence ---------------------------------

await t.check('MessageBoxClient initializeConnection authenticates (polling, then WebSocket upgrade)', async () => {
  await withTimeout(A.client.initializeConnection(url), 10_000, 'initializeConnection')
  const io = A.client.testSocket?.ioSocket
  expect(io?.connected === true, 'socket connected')
  // The default transport sequence: polling first, then the upgrade to WebSocket.
  for (let i = 0; i < 50 && io.io.engine.transport.name !== 'websocket'; i++) await sleep(100)
  expectEqual(io.io.engine.transport.name, 'websocket', 'transport after the upgrade')
})

const box = 'live_inbox'
const liveBody = { hello: 'live', n: 1, text: 'café ✓' }
const sent = {}
await t.check('listenForLiveMessages + another client\'s sendLiveMessage: acked over the socket, delivered live, decrypted', async () => {
  await listen(A, box, inboxA)
  const started = Date.now()
  const r = await B.client.sendLiveMessage({ recipient: A.key, messageBox: box, body: liveBody }, url)
  // The socket ack (an HTTP fallback would answer with `results` and take 10 s).
  expectEqual(Object.keys(r).sort(), ['messageId', 'status'], `ack ${JSON.stringify(r)}`)
  expectEqual(r.status, 'success', 'ack status')
  expect(/^[0-9a-f]{64}$/.test(r.messageId), `messageId ${r.messageId}`)
  expect(Date.now() - started < 9_000, 'no 10 s ack timeout')
  const m = await inboxA.next(box)
  expectEqual([m.sender, m.messageId], [B.key, r.messageId], 'sender, messageId')
  expectEqual(JSON.parse(m.body), liveBody, 'decrypted body')
  sent.live = r.messageId
})

await t.check('the live message is persisted: listMessages shows it (decrypted), acknowledge removes it', async () => {
  const messages = await A.client.listMessages({ messageBox: box, host: url })
  const row = messages.find(m => m.messageId === sent.live)
  expect(row != null, `listed: ${JSON.stringify(messages).slice(0, 300)}`)
  expectEqual(row.sender, B.key, 'sender')
  expectEqual(row.body, liveBody, 'decrypted body')
  expectEqual(await A.client.acknowledgeMessage({ messageIds: [sent.live], host: url }), 'success', 'ack')
  expectEqual((await A.client.listMessages({ messageBox: box, host: url })).map(m => m.messageId), [], 'empty after ack')
})

await t.check('a plain HTTP sendMessage is delivered live to the box\'s listener', async () => {
  const r = await C.client.sendMessage({ recipient: A.key, messageBox: box, body: { via: 'http' } }, url)
  expectEqual(r.status, 'success', 'HTTP send')
  const m = await inboxA.next(box)
  expectEqual([m.sender, m.messageId], [C.key, r.messageId], 'sender, messageId')
  expectEqual(JSON.parse(m.body), { via: 'http' }, 'decrypted body')
  await A.client.acknowledgeMessage({ messageIds: [r.messageId], host: url })
})

await t.check('sendLiveMessage with skipEncryption: the plain body arrives as sent', async () => {
  const r = await B.client.sendLiveMessage({ recipient: A.key, messageBox: box, body: 'plain ✓ live', skipEncryption: true }, url)
  expectEqual(r.status, 'success', 'ack')
  const m = await inboxA.next(box)
  expectEqual([m.sender, m.messageId, m.body], [B.key, r.messageId, 'plain ✓ live'], 'message')
  await A.client.acknowledgeMessage({ messageIds: [r.messageId], host: url })
})

// --- several recipients and boxes, leaveRoom, foreign rooms ---------------------------------

const box1 = 'live_one'
const box2 = 'live_two'
await t.check('several recipients and boxes: each listener gets exactly its own messages', async () => {
  await listen(A, box1, inboxA)
  await listen(A, box2, inboxA)
  await listen(B, box1, inboxB)
  const ids = {}
  for (const [who, b] of [[A, box1], [A, box2], [B, box1]]) {
    const r = await C.client.sendLiveMessage({ recipient: who.key, messageBox: b, body: `to ${who.name} ${b}` }, url)
    expectEqual(r.status, 'success', `ack ${who.name} ${b}`)
    ids[`${who.name} ${b}`] = r.messageId
  }
  const got = {}
  for (const [who, inbox, b] of [[A, inboxA, box1], [A, inboxA, box2], [B, inboxB, box1]]) {
    const m = await inbox.next(b)
    got[`${who.name} ${b}`] = [m.messageId, m.sender, m.body]
  }
  expectEqual(got, Object.fromEntries(Object.entries(ids).map(([k, id]) => [k, [id, C.key, `to ${k}`]])), 'deliveries')
  await sleep(1000)
  expectEqual([inboxA.pending(box1), inboxA.pending(box2), inboxB.pending(box1), inboxA.pending(box)], [0, 0, 0, 0], 'nothing extra')
})

await t.check('leaveRoom stops the deliveries of that room (others go on); a re-join restores them', async () => {
  const socket = A.client.testSocket
  const replies = new Inbox()
  for (const n of ['leftRoom', 'joinedRoom']) socket.on(n, (d) => replies.push(n, d))
  await A.client.leaveRoom(box2)
  expectEqual(await replies.next('leftRoom'), { roomId: `${A.key}-${box2}` }, 'leftRoom')
  const r2 = await C.client.sendLiveMessage({ recipient: A.key, messageBox: box2, body: 'after leave' }, url)
  const r1 = await C.client.sendLiveMessage({ recipient: A.key, messageBox: box1, body: 'still joined' }, url)
  expectEqual([r1.status, r2.status], ['success', 'success'], 'both acked (and stored)')
  const m1 = await inboxA.next(box1)
  expectEqual([m1.messageId, m1.body], [r1.messageId, 'still joined'], 'box1 still live')
  await sleep(1500)
  expectEqual(inboxA.pending(box2), 0, 'nothing live on the left room')
  // Not live, but stored.
  const stored = await A.client.listMessages({ messageBox: box2, host: url })
  expect(stored.some(m => m.messageId === r2.messageId), 'the message sent after leaving is stored')
  // joinRoom again (leaveRoom cleared the client's cache); the old listener is still there.
  await A.client.joinRoom(box2)
  expectEqual(await replies.next('joinedRoom'), { roomId: `${A.key}-${box2}` }, 'joinedRoom')
  const r3 = await C.client.sendLiveMessage({ recipient: A.key, messageBox: box2, body: 'rejoined' }, url)
  const m3 = await inboxA.next(box2)
  expectEqual([m3.messageId, m3.body], [r3.messageId, 'rejoined'], 'live again')
})

await t.check('joinRoom of another identity\'s room is refused (joinFailed) and delivers nothing', async () => {
  const socket = A.client.testSocket
  const replies = new Inbox()
  const foreign = `${B.key}-${box1}`
  socket.on('joinFailed', (d) => replies.push('joinFailed', d))
  socket.on('joinedRoom', (d) => replies.push('joinedRoom', d))
  socket.on(`sendMessage-${foreign}`, (d) => replies.push('leak', d))
  socket.emit('joinRoom', foreign)
  // What the upstream server (ts-stack infra/message-box-server) answers.
  const f = await replies.next('joinFailed')
  expectEqual([f.reason, f.roomId], ['Room is not owned by authenticated identity', foreign], 'joinFailed')
  const r = await C.client.sendLiveMessage({ recipient: B.key, messageBox: box1, body: 'for B only' }, url)
  const m = await inboxB.next(box1)
  expectEqual([m.messageId, m.body], [r.messageId, 'for B only'], 'B got it')
  await sleep(1000)
  expectEqual([replies.all('leak'), replies.all('joinedRoom')], [[], []], 'A got nothing of B\'s room')
})

await t.check('a blocked live send: the non-success ack makes sendLiveMessage fall back to HTTP at once (its 403)', async () => {
  const blockedBox = 'live_blocked'
  await A.client.setMessageBoxPermission({ messageBox: blockedBox, sender: C.key, recipientFee: -1 }, url)
  const started = Date.now()
  let error
  try {
    await C.client.sendLiveMessage({ recipient: A.key, messageBox: blockedBox, body: 'let me in' }, url)
  } catch (e) { error = e }
  expectEqual(error?.message, 'Failed to send message: Message sending failed: HTTP 403 - 403', 'error')
  // Far below the client's 10 s ack timeout: the server answered {status:"error"} (spec §5.5.5).
  expect(Date.now() - started < 5_000, `fallback took ${Date.now() - started} ms`)
  expectEqual(await A.client.listMessages({ messageBox: blockedBox, host: url }), [], 'nothing stored')
})

// --- raw AuthSocketClient --------------------------------------------------------------------

const EVENTS = ['authenticationSuccess', 'authenticationFailed', 'joinedRoom', 'joinFailed', 'leftRoom', 'leaveFailed',
  'messageFailed', 'paymentFailed']
let raw
await t.check('raw AuthSocketClient: connects, and events before `authenticated` get the original\'s refusals', async () => {
  raw = rawSocket(C, EVENTS)
  await raw.inbox.next('connect')
  // Two emits before any BRC-103 handshake: the client's Peer handshakes and sends both.
  raw.socket.emit('joinRoom', `${C.key}-raw`)
  raw.socket.emit('sendMessage', { roomId: `${C.key}-raw`, message: { messageId: 'x', recipient: C.key, body: 'b' } })
  expectEqual(await raw.inbox.next('joinFailed'), { reason: 'Unauthorized: WebSocket not authenticated' }, 'joinFailed')
  expectEqual(await raw.inbox.next('paymentFailed'), { reason: 'Unauthorized: WebSocket not authenticated' }, 'paymentFailed')
  expectEqual(raw.socket.serverIdentityKey, serverKey, 'the server identity learnt by the BRC-103 handshake')
})

await t.check('raw AuthSocketClient: bad `authenticated` payloads fail, a good one succeeds', async () => {
  raw.socket.emit('authenticated', {})
  expectEqual(await raw.inbox.next('authenticationFailed'), { reason: 'Missing identity key' }, 'missing')
  raw.socket.emit('authenticated', { identityKey: 'not a key' })
  expectEqual(await raw.inbox.next('authenticationFailed'), { reason: 'Invalid identity key format' }, 'invalid')
  raw.socket.emit('authenticated', { identityKey: C.key })
  expectEqual(await raw.inbox.next('authenticationSuccess'), { status: 'success' }, 'success')
})

await t.check('raw AuthSocketClient: malformed sendMessage/joinRoom/leaveRoom get the original\'s error events', async () => {
  const room = `${C.key}-raw`
  const cases = [
    ['sendMessage', 'not an object', 'messageFailed', 'Invalid data object'],
    ['sendMessage', { message: { body: 'b' } }, 'messageFailed', 'Invalid room ID'],
    ['sendMessage', { roomId: room, message: 5 }, 'messageFailed', 'Invalid message object'],
    ['sendMessage', { roomId: room, message: { recipient: C.key, messageId: 'm' } }, 'messageFailed', 'Invalid message body'],
    ['sendMessage', { roomId: room, message: { recipient: C.key, messageId: 'm', body: '   ' } }, 'messageFailed', 'Invalid message body'],
    ['joinRoom', '', 'joinFailed', 'Invalid room ID'],
    ['joinRoom', { roomId: room }, 'joinFailed', 'Invalid room ID'],
    ['leaveRoom', 42, 'leaveFailed', 'Invalid room ID']
  ]
  for (const [event, data, reply, reason] of cases) {
    raw.socket.emit(event, data)
    const got = await raw.inbox.next(reply)
    expectEqual(got?.reason, reason, `${event} ${JSON.stringify(data)} → ${reply}`)
  }
})

await t.check('raw AuthSocketClient: a send whose recipient is not the room\'s key gets a non-success ack', async () => {
  const room = `${C.key}-raw`
  const acks = new Inbox()
  raw.socket.on(`sendMessageAck-${room}`, (d) => acks.push('ack', d))
  raw.socket.emit('sendMessage', { roomId: room, message: { messageId: 'mismatch-1', recipient: A.key, body: 'b' } })
  const ack = await acks.next('ack')
  // Ours (spec §5.5.5): the client falls back to HTTP at once on a non-success ack.
  expectEqual([ack.status, ack.messageId], ['error', 'mismatch-1'], `ack ${JSON.stringify(ack)}`)
})

await t.check('raw AuthSocketClient: join, send to itself, receive the signed delivery, leave', async () => {
  const room = `${C.key}-raw`
  const id = `raw-self-${C.key.slice(2, 18)}`
  const got = new Inbox()
  raw.socket.on(`sendMessage-${room}`, (d) => got.push('msg', d))
  raw.socket.on(`sendMessageAck-${room}`, (d) => got.push('ack', d))
  raw.socket.emit('joinRoom', room)
  expectEqual(await raw.inbox.next('joinedRoom'), { roomId: room }, 'joinedRoom')
  raw.socket.emit('sendMessage', { roomId: room, message: { messageId: id, recipient: C.key, body: 'hello é ✓' } })
  expectEqual(await got.next('ack'), { status: 'success', messageId: id }, 'ack')
  expectEqual(await got.next('msg'), { sender: C.key, messageId: id, body: 'hello é ✓' }, 'delivery')
  raw.socket.emit('leaveRoom', room)
  expectEqual(await raw.inbox.next('leftRoom'), { roomId: room }, 'leftRoom')
  // Stored raw (not wrapped as the HTTP route does).
  const messages = await C.client.listMessages({ messageBox: 'raw', host: url })
  expectEqual(messages.map(m => [m.messageId, m.sender, m.body]), [[id, C.key, 'hello é ✓']], 'stored')
  await C.client.acknowledgeMessage({ messageIds: [id], host: url })
})

await t.check('raw AuthSocketClient: disconnect (io client disconnect), reconnect on the same client, old BRC-103 session', async () => {
  raw.socket.disconnect()
  expectEqual(await raw.inbox.next('disconnect'), 'io client disconnect', 'disconnect reason')
  await sleep(500)
  expect(raw.inbox.pending('connect') === 0, 'no automatic reconnect after a client disconnect')
  // disconnect() forgot the server key but the Peer keeps its session: the next emit on the
  // new engine session is a general message on the old BRC-103 session (spec §4.6).
  raw.io.connect()
  await raw.inbox.next('connect')
  raw.socket.emit('authenticated', { identityKey: C.key })
  expectEqual(await raw.inbox.next('authenticationSuccess'), { status: 'success' }, 'authenticated again')
  raw.socket.emit('joinRoom', `${C.key}-raw`)
  expectEqual(await raw.inbox.next('joinedRoom'), { roomId: `${C.key}-raw` }, 'joinedRoom')
  raw.socket.disconnect()
  await raw.inbox.next('disconnect')
})

for (const [name, managerOptions, transport] of [
  ['websocket only (transports: [\'websocket\'])', { transports: ['websocket'] }, 'websocket'],
  ['polling only (upgrade: false)', { upgrade: false }, 'polling']
]) {
  await t.check(`raw AuthSocketClient ${name}: authenticate, join, send to itself, receive`, async () => {
    const D = await party(`D-${transport}`)
    const s = rawSocket(D, EVENTS, managerOptions)
    await s.inbox.next('connect')
    expectEqual(s.io.io.engine.transport.name, transport, 'transport at connect')
    const room = `${D.key}-t`
    const got = new Inbox()
    s.socket.on(`sendMessage-${room}`, (d) => got.push('msg', d))
    s.socket.on(`sendMessageAck-${room}`, (d) => got.push('ack', d))
    s.socket.emit('authenticated', { identityKey: D.key })
    expectEqual(await s.inbox.next('authenticationSuccess'), { status: 'success' }, 'authenticated')
    s.socket.emit('joinRoom', room)
    await s.inbox.next('joinedRoom')
    const id = `t-${transport}-${D.key.slice(2, 18)}`
    s.socket.emit('sendMessage', { roomId: room, message: { messageId: id, recipient: D.key, body: transport } })
    expectEqual((await got.next('ack')).status, 'success', 'ack')
    expectEqual(await got.next('msg'), { sender: D.key, messageId: id, body: transport }, 'delivery')
    // An HTTP send reaches this transport too.
    const r = await C.client.sendMessage({ recipient: D.key, messageBox: 't', body: 'over http', skipEncryption: true }, url)
    expectEqual(await got.next('msg'), { sender: C.key, messageId: r.messageId, body: 'over http' }, 'HTTP → live')
    expectEqual(s.io.io.engine.transport.name, transport, 'transport at the end')
    s.socket.disconnect()
    await s.inbox.next('disconnect')
  }, { timeoutMs: 30_000 })
}

// --- a third identity, namespaces, payload limits (spec §7.4 items 6 and 7) -------------------

await t.check('a third identity connected at the same time receives nothing of others\' messages', async () => {
  const T = await party('T')
  const s = rawSocket(T, EVENTS)
  await s.inbox.next('connect')
  s.socket.emit('authenticated', { identityKey: T.key })
  await s.inbox.next('authenticationSuccess')
  s.socket.emit('joinRoom', `${T.key}-${box}`)
  await s.inbox.next('joinedRoom')
  // From here on, every event the server sends to T's socket is recorded.
  const extra = []
  s.socket.on(`sendMessage-${T.key}-${box}`, (d) => extra.push(['own room', d]))
  s.io.onAny((event, m) => { if (event === 'authMessage' && m?.messageType === 'general') extra.push(['general', m.payload?.length]) })
  const r1 = await B.client.sendLiveMessage({ recipient: A.key, messageBox: box, body: 'not for T (live)' }, url)
  const r2 = await C.client.sendMessage({ recipient: A.key, messageBox: box, body: 'not for T (http)' }, url)
  const got = [await inboxA.next(box), await inboxA.next(box)].map(m => m.messageId).sort()
  expectEqual(got, [r1.messageId, r2.messageId].sort(), 'A got both')
  await sleep(1500)
  expectEqual(extra, [], 'events reaching T')
  await A.client.acknowledgeMessage({ messageIds: got, host: url })
  s.socket.disconnect()
})

await t.check('a host with a path is a Socket.IO namespace: CONNECT_ERROR "Invalid namespace"', async () => {
  const N = await party('N')
  const socket = AuthSocketClient(`${url}/prefix`, { wallet: N.wallet, managerOptions: { reconnection: false } })
  N.sockets.push(socket)
  const err = await withTimeout(new Promise((resolve) => socket.ioSocket.on('connect_error', resolve)), 10_000, 'connect_error')
  expectEqual([err?.message, socket.ioSocket.connected], ['Invalid namespace', false], 'connect_error')
  socket.disconnect()
})

// Engine.IO maxPayload is 1 000 000 bytes per frame. The BRC-103 envelope carries the event as
// a JSON array of byte values, about 3 characters per body character for ASCII.
await t.check('a live body near maxPayload (~0.9 MB frame) is acked and delivered live', async () => {
  const P = await party('P')
  const body = 'a'.repeat(290_000)
  const r = await withTimeout(
    P.client.sendLiveMessage({ recipient: A.key, messageBox: box, body, skipEncryption: true }, url), 9_000, 'ack')
  expectEqual(Object.keys(r).sort(), ['messageId', 'status'], `socket ack ${JSON.stringify(r).slice(0, 200)}`)
  const m = await inboxA.next(box, 15_000)
  expectEqual([m.messageId, m.sender, m.body.length, m.body === body], [r.messageId, P.key, body.length, true], 'delivery')
  await A.client.acknowledgeMessage({ messageIds: [r.messageId], host: url })
  await P.client.disconnectWebSocket()
}, { timeoutMs: 40_000 })

await t.check('a live body over maxPayload: the socket is closed, sendLiveMessage falls back to HTTP and the message is stored', async () => {
  const Q = await party('Q')
  const body = 'b'.repeat(400_000)
  const started = Date.now()
  const r = await Q.client.sendLiveMessage({ recipient: A.key, messageBox: box, body, skipEncryption: true }, url)
  // The HTTP route's answer, after the client's 10 s wait for the ack that cannot come.
  expectEqual(r.status, 'success', `fallback ${JSON.stringify(r).slice(0, 200)}`)
  expect(Date.now() - started >= 9_000, `answered after ${Date.now() - started} ms, not by the socket`)
  const listed = await A.client.listMessages({ messageBox: box, host: url })
  const row = listed.find(m => m.sender === Q.key)
  expect(row != null && row.body === body, 'stored through HTTP')
  // A's listener may also get it live (the HTTP send delivers live): once at most.
  await sleep(500)
  expect(inboxA.all(box).filter(m => m.sender === Q.key).length <= 1, 'not delivered twice')
  while (inboxA.pending(box) > 0) await inboxA.next(box)
  await A.client.acknowledgeMessage({ messageIds: [row.messageId], host: url })
  await Q.client.disconnectWebSocket().catch(() => {})
}, { timeoutMs: 40_000 })

// --- many listeners ---------------------------------------------------------------------------

await t.check('20 concurrent MessageBoxClient listeners each get exactly their messages (none lost, none doubled)', async () => {
  const crowd = await Promise.all(Array.from({ length: 20 }, (_, i) => party(`L${i}`)))
  const inbox = new Inbox()
  await Promise.all(crowd.map(p => p.client.listenForLiveMessages({
    messageBox: 'crowd', overrideHost: url, onMessage: (m) => inbox.push(p.key, m)
  })))
  const senders = [A, B, C]
  const expected = Object.fromEntries(crowd.map(p => [p.key, []]))
  // Every listener gets two messages, from different senders, all sent concurrently.
  await Promise.all(crowd.flatMap((p, i) => [0, 1].map(async (k) => {
    const s = senders[(i + k) % senders.length]
    const body = `crowd ${p.name} #${k} from ${s.name}`
    const r = await s.client.sendLiveMessage({ recipient: p.key, messageBox: 'crowd', body }, url)
    expectEqual(r.status, 'success', `ack ${body}`)
    expected[p.key].push([r.messageId, s.key, body])
  })))
  const deadline = Date.now() + 30_000
  while (Date.now() < deadline && crowd.some(p => inbox.all(p.key).length < 2)) await sleep(200)
  await sleep(1500)
  const sort = (a) => [...a].sort((x, y) => x[0].localeCompare(y[0]))
  for (const p of crowd) {
    const got = inbox.all(p.key).map(m => [m.messageId, m.sender, m.body])
    expectEqual(sort(got), sort(expected[p.key]), `${p.name}'s deliveries`)
  }
  await Promise.all(crowd.map(p => p.client.disconnectWebSocket()))
}, { timeoutMs: 120_000 })

await t.check('an idle socket outlives the ping interval (server pings, client pongs) and still works', async () => {
  const { raw: r, party: I } = idle
  await r.inbox.next('connect', 1)
  const interval = r.io.io.engine._pingInterval
  expectEqual([interval, r.io.io.engine._pingTimeout], [25_000, 20_000], 'pingInterval, pingTimeout from the open packet')
  const wait = idle.started + interval + 2_000 - Date.now()
  if (wait > 0) await sleep(wait)
  expect(idle.pings >= 1, `pings received: ${idle.pings}`)
  expect(r.io.connected && r.inbox.all('disconnect').length === 0, 'still connected, never dropped')
  r.socket.emit('authenticated', { identityKey: I.key })
  expectEqual(await r.inbox.next('authenticationSuccess'), { status: 'success' }, 'authenticated after idling')
  r.socket.disconnect()
}, { timeoutMs: 40_000 })

// --- restart ---------------------------------------------------------------------------------

if (args.restart) {
  const rbox = 'live_restart'
  const before = new Inbox()
  await t.check('before the restart: A listens on a fresh box', async () => {
    await A.client.listenForLiveMessages({ messageBox: rbox, overrideHost: url, onMessage: (m) => before.push('m', m) })
    const r = await B.client.sendLiveMessage({ recipient: A.key, messageBox: rbox, body: 'before' }, url)
    expectEqual((await before.next('m')).messageId, r.messageId, 'delivered')
  })

  const oldSocketA = A.client.testSocket
  const seen = new Inbox()
  oldSocketA.on('connect', () => seen.push('connect', true))
  oldSocketA.on('disconnect', (reason) => seen.push('disconnect', reason))
  oldSocketA.ioSocket.on('authMessage', (m) => seen.push(m.messageType, m))
  const restarted = await t.check('the harness restarts the server', async () => {
    await control('restart')
    return true
  }, { timeoutMs: 100_000 })

  if (restarted) {
    await t.check('after the restart: the MessageBoxClient drops its socket; the old one reconnects by itself (transport close)', async () => {
      expectEqual(await seen.next('disconnect', 5_000), 'transport close', 'disconnect reason')
      expect(A.client.testSocket === undefined, 'MessageBoxClient forgot the socket (its disconnect handler)')
      await seen.next('connect', 30_000)
      expect(oldSocketA.connected, 'old socket connected again')
    }, { timeoutMs: 40_000 })

    await t.check('after the restart: the server handshakes with the silent reconnected socket and A\'s old listener gets live messages', async () => {
      // The client never re-authenticates that socket (its connect handler goes to the
      // forgotten `this.socket`), so the server starts BRC-103 from its side (spec §5.5.3).
      const req = await seen.next('initialRequest', 15_000)
      expectEqual(req.identityKey, serverKey, 'initialRequest from the server identity')
      await sleep(500)
      // B's own socket went too: sendLiveMessage opens a new one (joinRoom skipped by its cache).
      const r = await B.client.sendLiveMessage({ recipient: A.key, messageBox: rbox, body: 'after restart' }, url)
      expectEqual(Object.keys(r).sort(), ['messageId', 'status'], `socket ack ${JSON.stringify(r)}`)
      const m = await before.next('m')
      expectEqual([m.messageId, m.sender, m.body], [r.messageId, B.key, 'after restart'], 'delivered to the old listener')
    }, { timeoutMs: 40_000 })

    await t.check('after the restart: a fresh MessageBoxClient listens and receives; HTTP list/ack work', async () => {
      const E = await party('E')
      const inbox = new Inbox()
      await listen(E, rbox, inbox)
      const r = await C.client.sendLiveMessage({ recipient: E.key, messageBox: rbox, body: { fresh: true } }, url)
      const m = await inbox.next(rbox)
      expectEqual([m.messageId, m.sender, JSON.parse(m.body)], [r.messageId, C.key, { fresh: true }], 'delivered')
      const listed = await E.client.listMessages({ messageBox: rbox, host: url })
      expectEqual(listed.map(x => x.messageId), [r.messageId], 'stored')
      expectEqual(await E.client.acknowledgeMessage({ messageIds: [r.messageId], host: url }), 'success', 'ack')
      // A's messages of that box survived the restart.
      const a = await A.client.listMessages({ messageBox: rbox, host: url })
      expectEqual(a.map(x => x.body).sort(), ['after restart', 'before'], 'A\'s box')
    }, { timeoutMs: 40_000 })
  }
}

// --- nothing left the machine ---------------------------------------------------------------

await t.check('no overlay lookup and no request to another origin', async () => {
  expectEqual(lookups, [], 'overlay lookups')
  expectEqual(wire.refused, [], 'refused URLs')
})

for (const close of closers) await close().catch(() => {})
t.finish()
