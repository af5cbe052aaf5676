// The real AuthFetch (@bsv/sdk 2.1.0, ProtoWallet identities) against the server under test:
// handshake on the first request, signed POST/GET, signed non-2xx answers, concurrency on
// one AuthFetch (warm and from a cold start), a ~1 MB body each way, transparent recovery
// after a server restart, and a certificate request that is answered.
//
//   node authfetch.mjs --url http://127.0.0.1:PORT --server-identity <66 hex> \
//     [--client-key <64 hex>] [--restart]
//
// --restart: midway, print "@@CONTROL restart" and wait for the harness to restart the
// server (same key, same database, same port) before going on with the same AuthFetch.

import { Checks, control, expect, expectEqual, getJson, installNetworkTripwire, parseArgs, postJson } from './lib.mjs'

const args = parseArgs({
  url: { env: 'MB_URL', required: true },
  'server-identity': { env: 'MB_SERVER_IDENTITY', required: true },
  'client-key': { env: 'MB_CLIENT_KEY' },
  restart: { env: 'MB_RESTART', flag: true }
})
const url = args.url.replace(/\/+$/, '')
const origin = new URL(url).origin
const serverKey = args['server-identity']
const wire = installNetworkTripwire(origin)
// Imported only now: the SDK's fetch transport captures globalThis.fetch at load time.
const { AuthFetch, ProtoWallet, PrivateKey } = await import('@bsv/sdk')

const t = new Checks('authfetch')
const clientPriv = args['client-key'] != null ? PrivateKey.fromHex(args['client-key']) : PrivateKey.fromRandom()
const wallet = new ProtoWallet(clientPriv)
const me = (await wallet.getPublicKey({ identityKey: true })).publicKey
const authFetch = new AuthFetch(wallet)
t.note(`client identity ${me}, server ${url} (${serverKey})`)

/** Every authenticated response must carry the server key and nothing else unsigned. */
function expectSigned (res, what) {
  expectEqual(res.headers.get('x-bsv-auth-identity-key'), serverKey, `${what}: x-bsv-auth-identity-key`)
  // AuthFetch rebuilds the Response from the signed payload: only signed x-bsv-* headers
  // plus the identity key survive. Our server signs no custom headers.
  expectEqual([...res.headers.keys()], ['x-bsv-auth-identity-key'], `${what}: headers the app sees`)
}

/** A random compressed public key (a recipient nobody reads). */
const someKey = () => PrivateKey.fromRandom().toPublicKey().toString()

/** The message bodies of my `box`, as stored (the HTTP envelope unwrapped). */
async function listMine (box, fetcher = authFetch) {
  const { res, json } = await postJson(fetcher, `${url}/listMessages`, { messageBox: box })
  expectEqual(res.status, 200, `listMessages ${box} status`)
  expectEqual(json.status, 'success', `listMessages ${box} status field`)
  return json.messages.map(m => ({ ...m, envelope: JSON.parse(m.body) }))
}

async function sendToSelf (box, body, messageId) {
  const { res, json } = await postJson(authFetch, `${url}/sendMessage`, {
    message: { recipient: me, messageBox: box, body, messageId }
  })
  expectEqual(res.status, 200, `sendMessage ${messageId} status (${JSON.stringify(json).slice(0, 200)})`)
  return json
}

// --- unauthenticated surface (plain fetch, no AuthFetch) ------------------------------------

await t.check('plain fetch without auth headers gets the 401 JSON', async () => {
  const res = await fetch(`${url}/listMessages`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{}' })
  expectEqual(res.status, 401, 'status')
  expectEqual(await res.json(), { status: 'error', code: 'UNAUTHORIZED', message: 'Mutual-authentication failed!' }, 'body')
})

await t.check('OPTIONS preflight answered 200 OK without auth', async () => {
  const res = await fetch(`${url}/sendMessage`, { method: 'OPTIONS' })
  expectEqual(res.status, 200, 'status')
  expectEqual(await res.text(), 'OK', 'body')
  expectEqual(res.headers.get('access-control-expose-headers'), '*', 'expose-headers')
})

// --- handshake and signed requests -----------------------------------------------------------

await t.check('handshake happens on the first request (POST /listMessages)', async () => {
  expect(authFetch.peers[origin] == null, 'no peer before the first request')
  const { res, json } = await postJson(authFetch, `${url}/listMessages`, { messageBox: 'interop_af' })
  expectEqual(res.status, 200, 'status')
  expectEqual(json, { status: 'success', messages: [] }, 'body')
  expectSigned(res, 'listMessages')
  expectEqual(authFetch.peers[origin]?.identityKey, serverKey, 'server identity learnt by AuthFetch')
})

const firstId = `af-${Date.now()}-1`
await t.check('POST /sendMessage (JSON body) to another identity', async () => {
  const recipient = someKey()
  const { res, json } = await postJson(authFetch, `${url}/sendMessage`, {
    message: { recipient, messageBox: 'interop_af', body: 'hello', messageId: firstId }
  })
  expectEqual(res.status, 200, 'status')
  expectSigned(res, 'sendMessage')
  expectEqual(json, {
    status: 'success',
    message: 'Your message has been sent to 1 recipient(s).',
    results: [{ recipient, messageId: firstId }]
  }, 'body')
})

await t.check('unicode JSON body round-trips through sendMessage and listMessages', async () => {
  const body = { text: 'héllo 🌍 "quoted" \\ back\nslash / tab\t', n: 42, nested: { list: [1, 'two', null, true] } }
  await sendToSelf('interop_unicode', body, `af-${Date.now()}-u`)
  const listed = await listMine('interop_unicode')
  expectEqual(listed.length, 1, 'one message')
  expectEqual(listed[0].envelope, { message: body }, 'stored envelope')
  expectEqual(listed[0].sender, me, 'sender')
  expect(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z$/.test(listed[0].createdAt), `createdAt format: ${listed[0].createdAt}`)
})

await t.check('GET with a query string (/permissions/get, nothing set: no permission key)', async () => {
  const { res, json } = await getJson(authFetch, `${url}/permissions/get?messageBox=interop_af`)
  expectEqual(res.status, 200, 'status')
  expectSigned(res, 'permissions/get')
  expectEqual(json, { status: 'success', description: 'No box-wide permission setting found for interop_af.' }, 'body')
})

// URLSearchParams encodes spaces as '+' and non-ASCII as %XX: the signature covers the
// encoded search string exactly as sent, and the server must decode it like the original.
const oddBox = 'my box é&co'
await t.check('POST /permissions/set then GET with an encoded query (+, %C3%A9, %26)', async () => {
  const set = await postJson(authFetch, `${url}/permissions/set`, { messageBox: oddBox, recipientFee: 7 })
  expectEqual(set.res.status, 200, 'set status')
  expectEqual(set.json, { status: 'success', description: `Box-wide default for all senders to ${oddBox} now requires 7 satoshis.` }, 'set body')
  const qs = new URLSearchParams({ messageBox: oddBox }).toString()
  expect(qs.includes('+') && qs.includes('%C3%A9') && qs.includes('%26'), `query encoding ${qs}`)
  const { res, json } = await getJson(authFetch, `${url}/permissions/get?${qs}`)
  expectEqual(res.status, 200, 'get status')
  expectEqual(json.description, `Box-wide permission setting found for ${oddBox}.`, 'description')
  expectEqual(json.permission.messageBox, oddBox, 'permission.messageBox')
  expectEqual(json.permission.recipientFee, 7, 'permission.recipientFee')
  expectEqual(json.permission.status, 'payment_required', 'permission.status')
  expectEqual(json.permission.sender, null, 'permission.sender')
})

await t.check('GET with a repeated query key (/permissions/quote, two recipients)', async () => {
  const [r1, r2] = [someKey(), someKey()]
  const { res, json } = await getJson(authFetch, `${url}/permissions/quote?recipient=${r1}&recipient=${r2}&messageBox=interop_af`)
  expectEqual(res.status, 200, 'status')
  expectSigned(res, 'quote')
  expectEqual(json.status, 'success', 'status field')
  expectEqual(json.description, 'Message delivery quotes generated for 2 recipients.', 'description')
  expectEqual(json.quotesByRecipient.map(q => [q.recipient, q.recipientFee, q.status]), [[r1, 0, 'always_allow'], [r2, 0, 'always_allow']], 'quotes')
  expectEqual(json.totals, { deliveryFees: 0, recipientFees: 0, totalForPayableRecipients: 0 }, 'totals')
  expectEqual(json.blockedRecipients, [], 'blockedRecipients')
})

await t.check('GET /permissions/list filtered by an encoded messageBox, with limit/offset/createdAtOrder', async () => {
  const qs = new URLSearchParams({ messageBox: oddBox, limit: '5', offset: '0', createdAtOrder: 'asc' }).toString()
  const { res, json } = await getJson(authFetch, `${url}/permissions/list?${qs}`)
  expectEqual(res.status, 200, 'status')
  expectEqual(json.status, 'success', 'status field')
  expectEqual(json.totalCount, 1, 'totalCount')
  expectEqual(json.permissions.map(p => [p.sender, p.messageBox, p.recipientFee]), [[null, oddBox, 7]], 'permissions')
})

// Like the original, a send to a box without any rule creates the recipient's box-wide
// default row (fee 0), so the earlier send to myself shows up here.
await t.check('GET /permissions/list unfiltered shows the auto-created default row', async () => {
  const { res, json } = await getJson(authFetch, `${url}/permissions/list`)
  expectEqual(res.status, 200, 'status')
  const rows = json.permissions.map(p => [p.sender, p.messageBox, p.recipientFee])
  expectEqual(json.totalCount, rows.length, 'totalCount')
  expect(rows.some(r => r[1] === 'interop_unicode' && r[0] === null && r[2] === 0), `default row for interop_unicode in ${JSON.stringify(rows)}`)
  expect(rows.some(r => r[1] === oddBox && r[2] === 7), 'the explicit row')
})

await t.check('GET /devices (nothing registered)', async () => {
  const { res, json } = await getJson(authFetch, `${url}/devices`)
  expectEqual(res.status, 200, 'status')
  expectEqual(json, { status: 'success', devices: [] }, 'body')
})

// --- non-2xx answers are ordinary signed Responses -------------------------------------------

await t.check('400 validation error comes back as a signed Response', async () => {
  const { res, json } = await postJson(authFetch, `${url}/sendMessage`, {})
  expectEqual([res.status, res.ok], [400, false], 'status/ok')
  expectSigned(res, '400')
  expectEqual(json, { status: 'error', code: 'ERR_MESSAGE_REQUIRED', description: 'Please provide a valid message to send!' }, 'body')
})

await t.check('400 on acknowledging an unknown id', async () => {
  const { res, json } = await postJson(authFetch, `${url}/acknowledgeMessage`, { messageIds: ['no-such-message'] })
  expectEqual(res.status, 400, 'status')
  expectEqual(json, { status: 'error', code: 'ERR_INVALID_ACKNOWLEDGMENT', description: 'Message not found!' }, 'body')
})

await t.check('400 on a bad query parameter (/permissions/list?limit=0)', async () => {
  const { res, json } = await getJson(authFetch, `${url}/permissions/list?limit=0`)
  expectEqual(res.status, 400, 'status')
  expectEqual(json, { status: 'error', code: 'ERR_INVALID_LIMIT', description: 'Limit must be a number between 1 and 1000' }, 'body')
})

// The original answers an unknown route with a broken response (AuthFetch throws
// "terminated"); DESIGN.md §3 fixes it: a signed 404 JSON error.
await t.check('signed 404 JSON for an unknown route (GET and POST)', async () => {
  const g = await getJson(authFetch, `${url}/no/such/route?x=1`)
  expectEqual(g.res.status, 404, 'GET status')
  expectSigned(g.res, '404')
  expectEqual([g.json.status, g.json.code], ['error', 'ERR_NOT_FOUND'], 'GET body')
  const p = await postJson(authFetch, `${url}/nope`, { a: 1 })
  expectEqual(p.res.status, 404, 'POST status')
  expectEqual([p.json.status, p.json.code], ['error', 'ERR_NOT_FOUND'], 'POST body')
})

// --- concurrency ------------------------------------------------------------------------------

await t.check('40 parallel requests on one (warm) AuthFetch', async () => {
  const box = 'interop_parallel'
  const ids = Array.from({ length: 40 }, (_, i) => `af-par-${Date.now()}-${i}`)
  const results = await Promise.all(ids.map((id, i) =>
    i % 4 === 3
      ? getJson(authFetch, `${url}/permissions/get?messageBox=${box}&n=${i}`).then(r => ({ id: null, ...r }))
      : postJson(authFetch, `${url}/sendMessage`, { message: { recipient: me, messageBox: box, body: { i }, messageId: id } }).then(r => ({ id, ...r }))
  ))
  for (const r of results) {
    expectEqual(r.res.status, 200, `status of ${r.id ?? 'a GET'}`)
    if (r.id != null) expectEqual(r.json.results, [{ recipient: me, messageId: r.id }], 'each response answers its own request')
  }
  const sent = ids.filter((_, i) => i % 4 !== 3)
  const listed = await listMine(box)
  expectEqual(listed.map(m => m.messageId).sort(), [...sent].sort(), 'every parallel send stored')
  const ack = await postJson(authFetch, `${url}/acknowledgeMessage`, { messageIds: sent })
  expectEqual(ack.json, { status: 'success' }, 'ack')
  expectEqual((await listMine(box)).length, 0, 'box empty after ack')
}, { timeoutMs: 60_000 })

// A fresh AuthFetch fired 12 times at once: each request starts its own handshake, so one
// identity holds 12 sessions at the same moment (the multi-device case). Every response
// must be signed on the session its request came in on, or AuthFetch would hang.
await t.check('12 parallel requests from a cold AuthFetch (concurrent handshakes)', async () => {
  const cold = new AuthFetch(wallet)
  const before = wire.handshakes()
  const results = await Promise.all(Array.from({ length: 12 }, (_, i) =>
    getJson(cold, `${url}/permissions/list?limit=${i + 1}`)))
  results.forEach(({ res, json }, i) => {
    expectEqual(res.status, 200, 'status')
    expectSigned(res, 'cold parallel')
    expectEqual(json.permissions.length, Math.min(i + 1, json.totalCount), `page size of request ${i}`)
  })
  const opened = wire.handshakes() - before
  expect(opened > 1, `several sessions were open at once (handshakes: ${opened})`)
  t.note(`cold parallel: ${opened} handshakes for 12 requests`)
}, { timeoutMs: 60_000 })

// --- a large body --------------------------------------------------------------------------

await t.check('~1 MB message body: sent, listed back intact (signed ~1 MB response), acknowledged', async () => {
  const chunk = 'abcdefghij0123456789€'
  const body = chunk.repeat(Math.ceil(1_000_000 / chunk.length)).slice(0, 1_000_000)
  const id = `af-large-${Date.now()}`
  await sendToSelf('interop_large', body, id)
  const listed = await listMine('interop_large')
  expectEqual(listed.length, 1, 'one message')
  expect(listed[0].envelope.message === body, `body intact (got ${listed[0].envelope.message?.length} chars)`)
  const ack = await postJson(authFetch, `${url}/acknowledgeMessage`, { messageIds: [id] })
  expectEqual(ack.json, { status: 'success' }, 'ack')
}, { timeoutMs: 60_000 })

// --- certificates --------------------------------------------------------------------------

// brc103.md §8: the server holds no certificates; a certificateRequest must be answered
// (TS: a signed certificateResponse with certificates: []) so the client resolves with [].
await t.check('sendCertificateRequest resolves with no certificates', async () => {
  const certs = await authFetch.sendCertificateRequest(url, {
    certifiers: [serverKey],
    types: { [Buffer.alloc(32).toString('base64')]: ['name'] }
  })
  expectEqual(certs, [], 'certificates')
}, { timeoutMs: 15_000 })

await t.check('the session still works after the certificate request', async () => {
  const { res } = await postJson(authFetch, `${url}/listMessages`, { messageBox: 'interop_af' })
  expectEqual(res.status, 200, 'status')
  expectSigned(res, 'after certificate request')
})

// --- recovery after a server restart --------------------------------------------------------

if (args.restart) {
  const box = 'interop_restart'
  const id = `af-restart-${Date.now()}`
  await t.check('before restart: a message is stored', async () => {
    await sendToSelf(box, 'survives the restart', id)
  })
  const peerBefore = authFetch.peers[origin]?.peer
  let handshakesBefore
  const restarted = await t.check('harness restarted the server', async () => {
    await control('restart')
    handshakesBefore = wire.handshakes()
    return true
  }, { timeoutMs: 120_000 })
  if (restarted === true) {
    // The old session is gone: the server answers 401, AuthFetch drops the peer,
    // handshakes again and retries, all inside this one fetch call.
    await t.check('after restart: the same AuthFetch re-handshakes by itself and succeeds', async () => {
      const listed = await listMine(box)
      expectEqual(listed.map(m => [m.messageId, m.envelope.message]), [[id, 'survives the restart']], 'message persisted')
      const peerAfter = authFetch.peers[origin]?.peer
      expect(peerAfter != null && peerAfter !== peerBefore, 'AuthFetch replaced its peer')
      expectEqual(wire.handshakes() - handshakesBefore, 1, 'exactly one new handshake')
    }, { timeoutMs: 30_000 })
    await t.check('after restart: the new session serves further requests', async () => {
      const ack = await postJson(authFetch, `${url}/acknowledgeMessage`, { messageIds: [id] })
      expectEqual(ack.json, { status: 'success' }, 'ack')
      expectSigned(ack.res, 'ack after restart')
    })
  }
}

await t.check('no request ever left for another origin', async () => {
  expectEqual(wire.refused, [], 'refused URLs')
})

t.finish()
