// Issue 11's "Done means" with the real clients (run by tests/fleet_e2e.rs): three nodes on one
// MySQL and one Redis behind a round-robin proxy that sends each HTTP request to the next node
// (WebSocket upgrades tunnelled to the next node, dead nodes skipped), and a second such proxy
// that refuses upgrades, so an unmodified MessageBoxClient stays on polling there.
//
//   node fleet_e2e.mjs --url http://127.0.0.1:PROXY --polling-url http://127.0.0.1:PROXY2 \
//     --server-identity <66 hex> --nodes <node id>=http://127.0.0.1:PORT,...
//
// Harness requests: "@@CONTROL subscribed <key>" (a node subscribes to the key's live channel),
// "@@CONTROL kill <node id>" (SIGKILL), "@@CONTROL restart-redis".

import { format } from 'node:util'
import { Checks, Inbox, control, expect, expectEqual, installNetworkTripwire, parseArgs, postJson } from './lib.mjs'

const args = parseArgs({
  url: { env: 'MB_URL', required: true },
  'polling-url': { env: 'MB_POLLING_URL', required: true },
  'server-identity': { env: 'MB_SERVER_IDENTITY', required: true },
  nodes: { env: 'MB_NODES', required: true }
})
const url = args.url.replace(/\/+$/, '')
const pollingUrl = args['polling-url'].replace(/\/+$/, '')
const nodes = new Map(args.nodes.split(',').map((pair) => {
  const i = pair.indexOf('=')
  return [pair.slice(0, i), pair.slice(i + 1).replace(/\/+$/, '')]
}))
const wire = installNetworkTripwire([url, pollingUrl, ...nodes.values()].map((u) => new URL(u).origin))
// Remembers AuthFetch's signed /listMessages requests, to replay one.
const signed = []
const tripwireFetch = globalThis.fetch
globalThis.fetch = async (input, init) => {
  const href = typeof input === 'string' ? input : (input?.url ?? String(input))
  const headers = new Headers(init?.headers ?? {})
  if (new URL(href).pathname === '/listMessages' && headers.has('x-bsv-auth-request-id')) signed.push({ href, init })
  return await tripwireFetch(input, init)
}
const { AuthFetch, ProtoWallet, PrivateKey } = await import('@bsv/sdk')
const { MessageBoxClient } = await import('@bsv/message-box-client')

for (const level of ['log', 'warn', 'error']) {
  console[level] = (...a) => process.stdout.write(`  [client ${level}] ${format(...a).replace(/\s+/g, ' ').slice(0, 160)}\n`)
}

const t = new Checks('fleet_e2e', { totalTimeoutMs: 280_000 })
const closers = []
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const box = 'e2e_inbox'

/** The node id (12 hex digits) a fleet Engine.IO sid names. */
function ownerOf (sid) {
  const bytes = Buffer.from(sid, 'base64url')
  expectEqual(bytes.length, 21, `a fleet sid (${sid})`)
  return bytes.subarray(1, 7).toString('hex')
}

/** A MessageBoxClient on `host` (an existing wallet or a new one). */
async function party (name, host, wallet = new ProtoWallet(PrivateKey.fromRandom())) {
  const client = new MessageBoxClient({ host, walletClient: wallet, networkPreset: 'local' })
  client.lookupResolver.query = async () => { throw new Error('interop tripwire: overlay lookup') }
  const key = (await wallet.getPublicKey({ identityKey: true })).publicKey
  await client.init(host)
  closers.push(async () => { await client.disconnectWebSocket().catch(() => {}) })
  return { name, wallet, client, key, host }
}

/** Starts listening; resolves once a node subscribed to the key. The inbox gets the messages. */
async function listen (p, inbox) {
  await p.client.listenForLiveMessages({ messageBox: box, overrideHost: p.host, onMessage: (m) => inbox.push(box, m) })
  await control(`subscribed ${p.key}`, 15_000)
  return ownerOf(p.client.socket.ioSocket.io.engine.id)
}

/** Waits (bounded) until `messageId` was seen in `inbox`, without leaving a waiter behind. */
async function waitFor (inbox, messageId, ms) {
  const until = Date.now() + ms
  for (;;) {
    const m = inbox.all(box).find(m => m.messageId === messageId)
    if (m != null) return m
    if (Date.now() > until) throw new Error(`${messageId} did not arrive within ${ms} ms`)
    await sleep(50)
  }
}

/** Expects the next live message to be `messageId` from `sender` with `body`. */
async function expectArrival (inbox, sender, messageId, body, what) {
  const m = await inbox.next(box, 10_000)
  expectEqual([m.sender, m.messageId], [sender, messageId], `${what}: sender, messageId`)
  expectEqual(JSON.parse(m.body), body, `${what}: decrypted body`)
}

// 1. AuthFetch ------------------------------------------------------------------------------
const fetchWallet = new ProtoWallet(PrivateKey.fromRandom())
const fetchKey = (await fetchWallet.getPublicKey({ identityKey: true })).publicKey
const authFetch = new AuthFetch(fetchWallet)
await t.check('AuthFetch: requests one after another and concurrently, each on the next node, one handshake', async () => {
  for (let i = 0; i < 6; i++) {
    const { res, json } = await postJson(authFetch, `${url}/sendMessage`, {
      message: { recipient: fetchKey, messageBox: 'fetch', body: `m${i}`, messageId: `e2e-fetch-${i}` }
    })
    expectEqual([res.status, json.status], [200, 'success'], `send ${i}`)
    expectEqual(res.headers.get('x-bsv-auth-identity-key'), args['server-identity'], `send ${i}: signer`)
  }
  const all = await Promise.all(Array.from({ length: 6 }, () => postJson(authFetch, `${url}/listMessages`, { messageBox: 'fetch' })))
  expectEqual(all.map(r => r.res.status), Array(6).fill(200), 'list statuses')
  expectEqual(all.map(r => r.json.messages.length), Array(6).fill(6), 'messages stored through three nodes')
  expectEqual(wire.handshakes(), 1, 'handshakes')
}, { timeoutMs: 60_000 })

// 3. Replay -----------------------------------------------------------------------------------
await t.check('a signed request accepted through the proxy is refused (401) as a replay on every node', async () => {
  expect(signed.length >= 6, `captured ${signed.length} signed requests`)
  const { init } = signed[signed.length - 1]
  for (const [id, nodeUrl] of nodes) {
    const res = await tripwireFetch(`${nodeUrl}/listMessages`, init)
    const json = await res.json()
    expectEqual([res.status, json.code], [401, 'ERR_AUTH_FAILED'], `replay on node ${id}`)
    expect(/replay/.test(json.description), `node ${id}: ${json.description}`)
  }
})

// 2. MessageBoxClient, default transports and polling only ------------------------------------
const L = await party('L (default transports, through the proxy)', url)
const P = await party('P (polling only: the proxy refuses upgrades)', pollingUrl)
const S = await party('S (sender over HTTP, through the proxy)', url)
const W = await party('W (live sender, through the proxy)', url)
const inboxL = new Inbox()
const inboxP = new Inbox()
let ownerL, ownerP
const sentToL = []

await t.check('MessageBoxClient with default transports connects and listens through the proxy', async () => {
  ownerL = await listen(L, inboxL)
  for (let i = 0; i < 50 && L.client.socket.ioSocket.io.engine.transport.name !== 'websocket'; i++) await sleep(100)
  expectEqual(L.client.socket.ioSocket.io.engine.transport.name, 'websocket', 'upgraded through the proxy')
  t.note(`L's socket is owned by node ${ownerL}`)
})

await t.check('MessageBoxClient on polling only connects and listens through the no-upgrade proxy', async () => {
  ownerP = await listen(P, inboxP)
  await sleep(1500)
  expectEqual(P.client.socket.ioSocket.io.engine.transport.name, 'polling', 'still polling')
  t.note(`P's socket is owned by node ${ownerP}`)
})

for (const [R, inbox, owner] of [[L, inboxL, () => ownerL], [P, inboxP, () => ownerP]]) {
  await t.check(`${R.name} receives sendMessage and sendLiveMessage through the proxy and directly on every other node`, async () => {
    for (let i = 0; i < 3; i++) {
      const body = { via: `http through the proxy #${i}` }
      const r = await S.client.sendMessage({ recipient: R.key, messageBox: box, body }, url)
      expectEqual(r.status, 'success', 'HTTP send')
      await expectArrival(inbox, S.key, r.messageId, body, `HTTP #${i}`)
      if (R === L) sentToL.push(r.messageId)
    }
    const body = { via: 'live through the proxy' }
    const r = await W.client.sendLiveMessage({ recipient: R.key, messageBox: box, body }, url)
    expectEqual(Object.keys(r).sort(), ['messageId', 'status'], `socket ack ${JSON.stringify(r)}`)
    await expectArrival(inbox, W.key, r.messageId, body, 'live')
    if (R === L) sentToL.push(r.messageId)
    // Deterministically cross-node: senders on each node that does not own R's socket.
    for (const [id, nodeUrl] of nodes) {
      if (id === owner()) continue
      const D = await party(`D (on node ${id})`, nodeUrl)
      const httpBody = { via: `http on node ${id}` }
      const h = await D.client.sendMessage({ recipient: R.key, messageBox: box, body: httpBody }, nodeUrl)
      await expectArrival(inbox, D.key, h.messageId, httpBody, `HTTP on node ${id}`)
      const liveBody = { via: `live on node ${id}` }
      const l = await D.client.sendLiveMessage({ recipient: R.key, messageBox: box, body: liveBody }, nodeUrl)
      expectEqual(l.status, 'success', 'socket ack')
      await expectArrival(inbox, D.key, l.messageId, liveBody, `live on node ${id}`)
      expectEqual(ownerOf(D.client.socket.ioSocket.io.engine.id), id, 'the live sender\'s socket is on that node')
      if (R === L) sentToL.push(h.messageId, l.messageId)
      await D.client.disconnectWebSocket()
    }
    await sleep(500)
    expectEqual(inbox.pending(box), 0, 'each arrived once')
  }, { timeoutMs: 90_000 })
}

// 4. SIGKILL of L's node ------------------------------------------------------------------------
let L2
const inboxL2 = new Inbox()
await t.check('SIGKILL of the node that holds L\'s socket: it reconnects through the proxy to another node', async () => {
  const old = L.client.socket
  await control(`kill ${ownerL}`)
  for (let i = 0; i < 100 && L.client.socket != null; i++) await sleep(100)
  expectEqual(L.client.socket, undefined, 'MessageBoxClient saw the disconnect (and dropped its socket)')
  // socket.io's own reconnection, through the proxy, which skips the dead node.
  for (let i = 0; i < 200 && !old.connected; i++) await sleep(100)
  expect(old.connected, 'the underlying socket reconnected')
  const now = ownerOf(old.ioSocket.io.engine.id)
  expect(now !== ownerL && nodes.has(now), `reconnected to node ${now}, not the killed ${ownerL}`)
  t.note(`L reconnected from node ${ownerL} to node ${now}`)
}, { timeoutMs: 40_000 })

await t.check('after the reconnect, the same MessageBoxClient re-listening receives again (what arrives is reported)', async () => {
  // MessageBoxClient 2.1.1 drops its socket on disconnect but keeps joinedRooms; socket.io
  // reconnects the old socket, which sends neither `authenticated` nor `joinRoom` (the
  // client's handlers emit on `this.socket`, now undefined); a new listenForLiveMessages
  // opens a new socket and skips joinRoom ("Already joined"). The server delivers by verified
  // identity, not by joins, so what arrives depends on which sockets finished BRC-103.
  const before = inboxL.all(box).length
  const body = { via: 'after the kill, before re-listening' }
  const r = await S.client.sendMessage({ recipient: L.key, messageBox: box, body }, url)
  sentToL.push(r.messageId)
  await sleep(3000)
  const early = inboxL.all(box).slice(before).map(m => m.messageId)
  t.note(`before re-listening, live on the reconnected socket: ${JSON.stringify(early)} (sent ${r.messageId})`)
  await L.client.listenForLiveMessages({ messageBox: box, overrideHost: url, onMessage: (m) => inboxL.push(box, m) })
  expect(L.client.getJoinedRooms().has(`${L.key}-${box}`), 'the room entry survived the disconnect')
  await control(`subscribed ${L.key}`, 15_000)
  const body2 = { via: 'after re-listening on the same client' }
  const r2 = await S.client.sendMessage({ recipient: L.key, messageBox: box, body: body2 }, url)
  sentToL.push(r2.messageId)
  await waitFor(inboxL, r2.messageId, 10_000)
  await sleep(1000)
  const got = inboxL.all(box).slice(before).map(m => m.messageId)
  expectEqual(got.filter(id => id !== r.messageId && id !== r2.messageId), [], 'nothing but the two')
  t.note(`after re-listening on the same client: ${got.filter(id => id === r2.messageId).length} arrival(s) of the message sent then; all arrivals ${JSON.stringify(got)}`)
  inboxL.queues.set(box, [])
}, { timeoutMs: 40_000 })

await t.check('a new MessageBoxClient on L\'s wallet listens through the proxy and receives from other nodes; nothing was lost', async () => {
  L2 = await party('L2 (L\'s wallet, a new client)', url, L.wallet)
  const owner = await listen(L2, inboxL2)
  expect(owner !== ownerL, `listening on node ${owner}`)
  const body = { via: 'http after the kill' }
  const r = await S.client.sendMessage({ recipient: L.key, messageBox: box, body }, url)
  await expectArrival(inboxL2, S.key, r.messageId, body, 'HTTP after the kill')
  const liveBody = { via: 'live after the kill' }
  const l = await W.client.sendLiveMessage({ recipient: L.key, messageBox: box, body: liveBody }, url)
  await expectArrival(inboxL2, W.key, l.messageId, liveBody, 'live after the kill')
  sentToL.push(r.messageId, l.messageId)
  // Every message sent to L, live-delivered or not, is listed (stored before published).
  const listed = await L2.client.listMessages({ messageBox: box, host: url })
  const ids = new Set(listed.map(m => m.messageId))
  expectEqual(sentToL.filter(id => !ids.has(id)), [], 'messages sent to L and not listed')
}, { timeoutMs: 60_000 })

// 5. Redis restart ------------------------------------------------------------------------------
await t.check('a Redis restart: live delivery across nodes resumes within seconds', async () => {
  await control('restart-redis')
  const started = Date.now()
  const sent = []
  let resumed = null
  while (resumed == null && Date.now() - started < 20_000) {
    const body = { via: `after the Redis restart ${sent.length}` }
    const r = await S.client.sendMessage({ recipient: L.key, messageBox: box, body }, url)
    expectEqual(r.status, 'success', 'HTTP send while Redis comes back')
    sent.push(r.messageId)
    if (await waitFor(inboxL2, r.messageId, 1_500).catch(() => null)) resumed = Date.now() - started
  }
  expect(resumed != null, 'live delivery did not resume within 20 s')
  t.note(`live delivery resumed ${resumed} ms after Redis answered again`)
  await control(`subscribed ${L.key}`, 15_000)
  // Then deterministically cross-node, HTTP and live, from every node but the listener's.
  const owner = ownerOf(L2.client.socket.ioSocket.io.engine.id)
  for (const [id, nodeUrl] of nodes) {
    if (id === owner || id === ownerL) continue
    const D = await party(`D (on node ${id})`, nodeUrl)
    const h = await D.client.sendMessage({ recipient: L.key, messageBox: box, body: { n: 1 } }, nodeUrl)
    await waitFor(inboxL2, h.messageId, 10_000)
    const l = await D.client.sendLiveMessage({ recipient: L.key, messageBox: box, body: { n: 2 } }, nodeUrl)
    expectEqual(l.status, 'success', 'socket ack')
    await waitFor(inboxL2, l.messageId, 10_000)
    sent.push(h.messageId, l.messageId)
    await D.client.disconnectWebSocket()
  }
  const listed = new Set((await L2.client.listMessages({ messageBox: box, host: url })).map(m => m.messageId))
  expectEqual(sent.filter(id => !listed.has(id)), [], 'sent around the restart and not listed')
}, { timeoutMs: 60_000 })

await t.check('no overlay lookup and no request outside the fleet', async () => {
  expectEqual(wire.refused, [], 'refused URLs')
})

for (const close of closers) await close().catch(() => {})
t.finish()
