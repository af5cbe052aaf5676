// The real AuthFetch (@bsv/sdk) against a fleet, through a proxy that sends each request to
// the next node in turn (tests/fleet_sessions.rs starts the nodes and the proxy): the session
// made by the first handshake serves every request on every node, one at a time and
// concurrently, without a second handshake.
//
//   node fleet_sessions.mjs --url http://127.0.0.1:PROXY_PORT --server-identity <66 hex>

import { Checks, expectEqual, installNetworkTripwire, parseArgs, postJson } from './lib.mjs'

const args = parseArgs({
  url: { env: 'MB_URL', required: true },
  'server-identity': { env: 'MB_SERVER_IDENTITY', required: true }
})
const url = args.url.replace(/\/+$/, '')
const wire = installNetworkTripwire(new URL(url).origin)
// Imported only now: the SDK's fetch transport captures globalThis.fetch at load time.
const { AuthFetch, ProtoWallet, PrivateKey } = await import('@bsv/sdk')

const t = new Checks('fleet_sessions')
const wallet = new ProtoWallet(PrivateKey.fromRandom())
const me = (await wallet.getPublicKey({ identityKey: true })).publicKey
const authFetch = new AuthFetch(wallet)

await t.check('one request after another, each on the next node', async () => {
  for (let i = 0; i < 9; i++) {
    const { res, json } = await postJson(authFetch, `${url}/sendMessage`, {
      message: { recipient: me, messageBox: 'fleet', body: `m${i}`, messageId: `fleet-js-${i}` }
    })
    expectEqual([res.status, json.status], [200, 'success'], `send ${i}`)
    expectEqual(res.headers.get('x-bsv-auth-identity-key'), args['server-identity'], `send ${i}: signer`)
  }
  const { res, json } = await postJson(authFetch, `${url}/listMessages`, { messageBox: 'fleet' })
  expectEqual(res.status, 200, 'list status')
  expectEqual(json.messages.length, 9, 'messages stored through three nodes')
  expectEqual(wire.handshakes(), 1, 'handshakes')
})

await t.check('concurrent requests on every node', async () => {
  const all = await Promise.all(
    Array.from({ length: 12 }, () => postJson(authFetch, `${url}/listMessages`, { messageBox: 'fleet' }))
  )
  expectEqual(all.map(r => r.res.status), Array(12).fill(200), 'statuses')
  expectEqual(wire.handshakes(), 1, 'handshakes')
}, { timeoutMs: 60_000 })

await t.check('nothing left the test network', async () => {
  expectEqual(wire.refused, [], 'requests refused by the tripwire')
})

t.finish()
