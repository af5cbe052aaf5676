// No load-balancer affinity (issue 11): the raw @bsv/authsocket-client 2.0.2 connects through
// a round-robin TCP proxy in front of the nodes of a fleet — every new TCP connection goes to
// the next node, as nginx's default `upstream` does — and works: connect, BRC-103
// authentication, joinRoom, a live send to itself, and a message sent over HTTP to the node
// that owns its session, with the default transports (polling, then the WebSocket upgrade),
// polling only, and WebSocket only. The Node client opens a TCP connection per poll, so its
// polls and POSTs land on every node in turn; the nodes forward them to the owner.
//
//   node fleet_forward.mjs --url http://127.0.0.1:PROXY --server-identity <66 hex> \
//     --nodes <node id>=http://127.0.0.1:PORT,<node id>=http://127.0.0.1:PORT
//
// The owner of a session is read from its Engine.IO sid (byte 0 the core, bytes 1–6 the node
// id, base64url); --nodes maps node ids to the nodes' own URLs (the harness reads them from
// the node registry in Redis). Every wait is bounded; every socket is closed at the end.

import { format } from 'node:util'
import { Checks, expect, expectEqual, Inbox, installNetworkTripwire, parseArgs } from './lib.mjs'

const args = parseArgs({
  url: { env: 'MB_URL', required: true },
  'server-identity': { env: 'MB_SERVER_IDENTITY', required: true },
  nodes: { env: 'MB_NODES', required: true }
})
const url = args.url.replace(/\/+$/, '')
/** node id (12 hex digits) → the node's own URL */
const nodes = new Map(args.nodes.split(',').map((pair) => {
  const i = pair.indexOf('=')
  return [pair.slice(0, i), pair.slice(i + 1).replace(/\/+$/, '')]
}))
const wire = installNetworkTripwire([new URL(url).origin, ...[...nodes.values()].map((u) => new URL(u).origin)])
const { ProtoWallet, PrivateKey } = await import('@bsv/sdk')
const { MessageBoxClient } = await import('@bsv/message-box-client')
const { AuthSocketClient } = await import('@bsv/authsocket-client')

for (const level of ['log', 'warn', 'error']) {
  console[level] = (...a) => process.stdout.write(`  [client ${level}] ${format(...a).replace(/\s+/g, ' ').slice(0, 160)}\n`)
}

const t = new Checks('fleet_forward', { totalTimeoutMs: 200_000 })
const lookups = []
const closers = []
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** An identity, with a MessageBoxClient that sends over HTTP to `host`. */
async function party (name, host) {
  const wallet = new ProtoWallet(PrivateKey.fromRandom())
  const client = new MessageBoxClient({ host, walletClient: wallet, networkPreset: 'local' })
  client.lookupResolver.query = async (q) => { lookups.push({ name, q }); throw new Error('interop tripwire: overlay lookup') }
  const key = (await wallet.getPublicKey({ identityKey: true })).publicKey
  await client.init(host)
  return { name, wallet, client, key }
}

/** The node id (12 hex digits) in a fleet Engine.IO sid. */
function ownerOf (sid) {
  const bytes = Buffer.from(sid, 'base64url')
  expectEqual(bytes.length, 21, `a fleet sid (${sid}) has 21 bytes`)
  return bytes.subarray(1, 7).toString('hex')
}

const EVENTS = ['connect', 'disconnect', 'connect_error', 'authenticationSuccess', 'authenticationFailed', 'joinedRoom',
  'joinFailed']

for (const [name, managerOptions, transport] of [
  ['default transports (polling, then the WebSocket upgrade)', undefined, 'websocket'],
  ['polling only (upgrade: false)', { upgrade: false }, 'polling'],
  ['WebSocket only', { transports: ['websocket'] }, 'websocket']
]) {
  await t.check(`raw AuthSocketClient through the round robin, ${name}: connects, authenticates, receives`, async () => {
    const wallet = new ProtoWallet(PrivateKey.fromRandom())
    const key = (await wallet.getPublicKey({ identityKey: true })).publicKey
    const socket = AuthSocketClient(url, { wallet, managerOptions })
    closers.push(async () => socket.disconnect())
    const inbox = new Inbox()
    for (const n of EVENTS) socket.on(n, (d) => inbox.push(n, d))
    await inbox.next('connect', 15_000)
    const engine = socket.ioSocket.io.engine
    const owner = ownerOf(engine.id)
    expect(nodes.has(owner), `the sid ${engine.id} names node ${owner}, one of ${[...nodes.keys()]}`)
    t.note(`${transport}: session ${engine.id} is owned by node ${owner} (${nodes.get(owner)})`)

    socket.emit('authenticated', { identityKey: key })
    expectEqual(await inbox.next('authenticationSuccess'), { status: 'success' }, 'authenticated')
    const room = `${key}-fleet`
    const got = new Inbox()
    socket.on(`sendMessage-${room}`, (d) => got.push('msg', d))
    socket.on(`sendMessageAck-${room}`, (d) => got.push('ack', d))
    socket.emit('joinRoom', room)
    expectEqual(await inbox.next('joinedRoom'), { roomId: room }, 'joinedRoom')
    if (transport === 'websocket') {
      // The default transports upgrade within a moment (the probe crossed the proxy too).
      for (let i = 0; i < 50 && engine.transport.name !== 'websocket'; i++) await sleep(100)
    }
    expectEqual(engine.transport.name, transport, 'transport')

    // A live send to itself: the socket's packets (POSTs, or frames through a tunnel) reach
    // the owner, which stores, acks and delivers.
    const id = `fleet-${transport}-${key.slice(2, 18)}`
    socket.emit('sendMessage', { roomId: room, message: { messageId: id, recipient: key, body: 'over the socket' } })
    expectEqual((await got.next('ack')).status, 'success', 'ack')
    expectEqual(await got.next('msg'), { sender: key, messageId: id, body: 'over the socket' }, 'live delivery')

    // An HTTP send on the node that owns the session is delivered live.
    const sender = await party(`S-${transport}`, nodes.get(owner))
    for (let i = 0; i < 3; i++) {
      const body = `over http #${i}`
      const r = await sender.client.sendMessage({ recipient: key, messageBox: 'fleet', body, skipEncryption: true }, nodes.get(owner))
      expectEqual(await got.next('msg'), { sender: sender.key, messageId: r.messageId, body }, `HTTP → live #${i}`)
    }
    // Still the same session: nothing reconnected on the way.
    expectEqual(engine.id, socket.ioSocket.io.engine.id, 'engine session')
    expectEqual(engine.transport.name, transport, 'transport at the end')
    socket.disconnect()
    await inbox.next('disconnect')
  }, { timeoutMs: 45_000 })
}

await t.check('no overlay lookup and no request to another origin', async () => {
  expectEqual(lookups, [], 'overlay lookups')
  expectEqual(wire.refused, [], 'refused URLs')
})

for (const close of closers) await close().catch(() => {})
t.finish()
