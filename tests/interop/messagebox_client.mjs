// The real MessageBoxClient (@bsv/message-box-client 2.1.1) over HTTP only, with three
// ProtoWallet identities A, B and C, against the server under test: encrypted and plain
// sends, listing with decryption, acknowledgement, multi-recipient sends, permissions and
// quotes, blocked senders, device registration.
//
//   node messagebox_client.mjs --url http://127.0.0.1:PORT --server-identity <66 hex> \
//     [--key-a <64 hex>] [--key-b <64 hex>] [--key-c <64 hex>]
//
// No overlay: every call passes the host explicitly (overrideHost / host), the client's
// LookupResolver is replaced by a tripwire, and fetch refuses any other origin. No real
// wallet: the ProtoWallets' createAction / internalizeAction are stubs that record their
// calls (the multi-recipient send always builds an action, with no outputs on free boxes).

import { format } from 'node:util'
import { Checks, expect, expectEqual, expectRejects, installNetworkTripwire, parseArgs, postJson } from './lib.mjs'

const args = parseArgs({
  url: { env: 'MB_URL', required: true },
  'server-identity': { env: 'MB_SERVER_IDENTITY', required: true },
  'key-a': { env: 'MB_KEY_A' },
  'key-b': { env: 'MB_KEY_B' },
  'key-c': { env: 'MB_KEY_C' }
})
const url = args.url.replace(/\/+$/, '')
const serverKey = args['server-identity']
const wire = installNetworkTripwire(new URL(url).origin)
const { ProtoWallet, PrivateKey } = await import('@bsv/sdk')
const { MessageBoxClient } = await import('@bsv/message-box-client')

// message-box-client 2.1.1 console.logs whole Response objects while quoting and
// console.errors full stacks on expected failures; keep the log readable by cutting each
// of its lines short (our own lines go straight to stdout).
for (const level of ['log', 'warn', 'error']) {
  console[level] = (...a) => process.stdout.write(`  [client ${level}] ${format(...a).replace(/\s+/g, ' ').slice(0, 160)}\n`)
}

const t = new Checks('messagebox_client')
const lookups = []

async function party (name, keyHex) {
  const wallet = new ProtoWallet(keyHex != null ? PrivateKey.fromHex(keyHex) : PrivateKey.fromRandom())
  const calls = { createAction: [], internalizeAction: [] }
  wallet.createAction = async (a) => { calls.createAction.push(a); return { txid: '00'.repeat(32), tx: [0xde, 0xad, 0xbe, 0xef] } }
  wallet.internalizeAction = async (a) => { calls.internalizeAction.push(a); return { accepted: true } }
  const client = new MessageBoxClient({ host: url, walletClient: wallet, networkPreset: 'local' })
  // Any overlay lookup is a test failure (checked at the end); the client would fall back
  // to its host, so record instead of throwing into the client.
  client.lookupResolver.query = async (q) => { lookups.push({ name, q }); throw new Error('interop tripwire: overlay lookup') }
  const key = (await wallet.getPublicKey({ identityKey: true })).publicKey
  return { name, wallet, calls, client, key }
}

const A = await party('A', args['key-a'])
const B = await party('B', args['key-b'])
const C = await party('C', args['key-c'])
t.note(`A=${A.key} B=${B.key} C=${C.key} server=${url} (${serverKey})`)

/** The raw rows of `who`'s `box` as the server returns them (no client processing). */
async function rawList (who, box) {
  const { res, json } = await postJson(who.client.authFetch, `${url}/listMessages`, { messageBox: box })
  expectEqual(res.status, 200, 'raw listMessages status')
  return json.messages
}

const byId = (messages) => Object.fromEntries(messages.map(m => [m.messageId, m]))

await t.check('init with an explicit host (no lookup, no request)', async () => {
  for (const p of [A, B, C]) {
    await p.client.init(url)
    expectEqual(await p.client.getIdentityKey(), p.key, `${p.name} identity`)
  }
})

// --- send, list, acknowledge ---------------------------------------------------------------

const box = 'interop_mb'
const encryptedBody = { hello: 'world', n: 1, text: 'café ✓' }
const sent = {}
await t.check('A sendMessage to B (encrypted by default)', async () => {
  const r = await A.client.sendMessage({ recipient: B.key, messageBox: box, body: encryptedBody }, url)
  expectEqual(r.status, 'success', 'status')
  expect(/^[0-9a-f]{64}$/.test(r.messageId), `messageId is the client's HMAC hex: ${r.messageId}`)
  expectEqual(r.results, [{ recipient: B.key, messageId: r.messageId }], 'results')
  sent.encrypted = r.messageId
})

await t.check('the server stores ciphertext only (HTTP envelope around {encryptedMessage})', async () => {
  const row = byId(await rawList(B, box))[sent.encrypted]
  expect(row != null, 'row present')
  const envelope = JSON.parse(row.body)
  const inner = JSON.parse(envelope.message)
  expectEqual(Object.keys(inner), ['encryptedMessage'], 'inner keys')
  expect(/^[A-Za-z0-9+/]+=*$/.test(inner.encryptedMessage), 'base64 ciphertext')
  expect(!row.body.includes('world') && !row.body.includes('café'), 'no plaintext in the stored body')
  expectEqual(row.sender, A.key, 'sender')
})

await t.check('A sendMessage to B with skipEncryption (string and object bodies)', async () => {
  const r1 = await A.client.sendMessage({ recipient: B.key, messageBox: box, body: 'plain ✓ text', skipEncryption: true }, url)
  const r2 = await A.client.sendMessage({ recipient: B.key, messageBox: box, body: { kind: 'plain-object' }, skipEncryption: true }, url)
  expectEqual([r1.status, r2.status], ['success', 'success'], 'status')
  sent.plain = r1.messageId
  sent.plainObject = r2.messageId
  const rows = byId(await rawList(B, box))
  expectEqual(JSON.parse(rows[sent.plain].body), { message: 'plain ✓ text' }, 'stored plain body')
  expectEqual(JSON.parse(rows[sent.plainObject].body), { message: '{"kind":"plain-object"}' }, 'stored object body')
})

await t.check('B listMessages: decrypted bodies equal what A sent, sender is A', async () => {
  const messages = await B.client.listMessages({ messageBox: box, host: url })
  expectEqual(messages.length, 3, 'count')
  const m = byId(messages)
  expectEqual(m[sent.encrypted]?.body, encryptedBody, 'decrypted body')
  expectEqual(m[sent.plain]?.body, 'plain ✓ text', 'plain string body')
  expectEqual(m[sent.plainObject]?.body, { kind: 'plain-object' }, 'plain object body')
  for (const msg of messages) expectEqual(msg.sender, A.key, `sender of ${msg.messageId}`)
  expectEqual(B.calls.internalizeAction.length, 0, 'no payment to internalize')
})

await t.check('B listMessagesLite gives the same decrypted bodies', async () => {
  const m = byId(await B.client.listMessagesLite({ messageBox: box, host: url }))
  expectEqual(m[sent.encrypted]?.body, encryptedBody, 'decrypted body')
  expectEqual(m[sent.plain]?.body, 'plain ✓ text', 'plain body')
})

await t.check('a box of another identity is not visible (C lists B\'s box name)', async () => {
  expectEqual(await C.client.listMessages({ messageBox: box, host: url }), [], 'C sees nothing')
})

await t.check('B acknowledgeMessage, then the box lists empty', async () => {
  const status = await B.client.acknowledgeMessage({ messageIds: [sent.encrypted, sent.plain, sent.plainObject], host: url })
  expectEqual(status, 'success', 'ack result')
  expectEqual(await B.client.listMessages({ messageBox: box, host: url }), [], 'empty after ack')
})

await t.check('acknowledging the same ids again is an error the client surfaces', async () => {
  const e = await expectRejects(B.client.acknowledgeMessage({ messageIds: [sent.encrypted], host: url }), 15_000, 'second ack')
  expect(String(e.message).startsWith('Failed to acknowledge messages on all hosts'), `error: ${e.message}`)
})

await t.check('A sends to itself (encrypted), lists, decrypts, acknowledges', async () => {
  const body = { note: 'to self', at: 1 }
  const r = await A.client.sendMessage({ recipient: A.key, messageBox: 'interop_self', body }, url)
  const messages = await A.client.listMessages({ messageBox: 'interop_self', host: url })
  expectEqual(messages.map(m => [m.messageId, m.sender, m.body]), [[r.messageId, A.key, body]], 'listed')
  expectEqual(await A.client.acknowledgeMessage({ messageIds: [r.messageId], host: url }), 'success', 'ack')
})

await t.check('a duplicate send (same body → same messageId) is reported sent and stored once', async () => {
  const body = 'same body twice'
  const r1 = await A.client.sendMessage({ recipient: C.key, messageBox: 'interop_dup', body, skipEncryption: true }, url)
  const r2 = await A.client.sendMessage({ recipient: C.key, messageBox: 'interop_dup', body, skipEncryption: true }, url)
  expectEqual([r1.status, r2.status, r1.messageId], ['success', 'success', r2.messageId], 'both succeed with one id')
  const messages = await C.client.listMessages({ messageBox: 'interop_dup', host: url })
  expectEqual(messages.map(m => m.messageId), [r1.messageId], 'stored once')
  await C.client.acknowledgeMessage({ messageIds: [r1.messageId], host: url })
})

await t.check('multi-recipient send (sendMesagetoRecepients) to B and C', async () => {
  const r = await A.client.sendMesagetoRecepients({ recipients: [B.key, C.key], messageBox: 'interop_multi', body: 'to many' }, url)
  expectEqual([r.status, r.description], ['success', 'Sent to 2 recipients.'], 'status')
  expectEqual(r.sent.map(s => s.recipient), [B.key, C.key], 'sent to')
  expectEqual(r.blocked, [], 'blocked')
  // Free boxes: the client still builds a (stub) action, with no outputs.
  expectEqual(A.calls.createAction.length, 1, 'createAction calls')
  expectEqual(A.calls.createAction[0].outputs, [], 'no payment outputs on a free box')
  // The batch route carries one shared body, so 2.1.1 sends it in the clear even without
  // skipEncryption.
  expectEqual((await rawList(B, 'interop_multi')).map(m => JSON.parse(m.body)), [{ message: 'to many' }], 'stored body (plaintext)')
  for (const p of [B, C]) {
    const messages = await p.client.listMessages({ messageBox: 'interop_multi', host: url })
    const mine = r.sent.find(s => s.recipient === p.key)
    expectEqual(messages.map(m => [m.messageId, m.sender, m.body]), [[mine.messageId, A.key, 'to many']], `${p.name} list`)
    expectEqual(await p.client.acknowledgeMessage({ messageIds: [mine.messageId], host: url }), 'success', `${p.name} ack`)
  }
  expectEqual([B.calls.internalizeAction.length, C.calls.internalizeAction.length], [0, 0], 'nothing internalized')
})

// --- permissions and quotes -----------------------------------------------------------------

const permBox = 'interop_perm'
await t.check('setMessageBoxPermission box-wide (fee 5) and getMessageBoxPermission', async () => {
  await B.client.setMessageBoxPermission({ messageBox: permBox, recipientFee: 5 }, url)
  const p = await B.client.getMessageBoxPermission({ recipient: B.key, messageBox: permBox }, url)
  expectEqual([p?.sender, p?.messageBox, p?.recipientFee, p?.status], [null, permBox, 5, 'payment_required'], 'permission')
  expect(/Z$/.test(p.createdAt) && /Z$/.test(p.updatedAt), 'timestamps')
})

await t.check('setMessageBoxPermission sender-specific (block A) and get it', async () => {
  await B.client.setMessageBoxPermission({ messageBox: permBox, sender: A.key, recipientFee: -1 }, url)
  const p = await B.client.getMessageBoxPermission({ recipient: B.key, messageBox: permBox, sender: A.key }, url)
  expectEqual([p?.sender, p?.messageBox, p?.recipientFee, p?.status], [A.key, permBox, -1, 'blocked'], 'permission')
})

await t.check('getMessageBoxPermission for a sender without a rule is empty (no box-wide fallback)', async () => {
  const p = await B.client.getMessageBoxPermission({ recipient: B.key, messageBox: permBox, sender: C.key }, url)
  expect(p == null, `expected no permission, got ${JSON.stringify(p)}`)
})

await t.check('getMessageBoxQuote (single): C pays the box-wide fee, A is blocked', async () => {
  const qc = await C.client.getMessageBoxQuote({ recipient: B.key, messageBox: permBox }, url)
  expectEqual(qc, { recipientFee: 5, deliveryFee: 0, deliveryAgentIdentityKey: serverKey }, 'C quote')
  const qa = await A.client.getMessageBoxQuote({ recipient: B.key, messageBox: permBox }, url)
  expectEqual(qa, { recipientFee: -1, deliveryFee: 0, deliveryAgentIdentityKey: serverKey }, 'A quote')
})

await t.check('a payable box without payment: the server\'s 400 surfaces as a client error', async () => {
  const e = await expectRejects(C.client.sendMessage({ recipient: B.key, messageBox: permBox, body: 'unpaid', skipEncryption: true }, url), 15_000, 'unpaid send')
  expectEqual(e.message, 'Failed to send message: Message sending failed: HTTP 400 - 400', 'error')
})

// DESIGN.md §3: box-wide rules are upserted, so a second box-wide set takes effect (the
// original would insert a duplicate row and keep answering with the oldest, fee 5).
await t.check('a second box-wide set (fee 0) replaces the first', async () => {
  await B.client.setMessageBoxPermission({ messageBox: permBox, recipientFee: 0 }, url)
  const p = await B.client.getMessageBoxPermission({ recipient: B.key, messageBox: permBox }, url)
  expectEqual([p?.sender, p?.recipientFee, p?.status], [null, 0, 'always_allow'], 'permission')
  const qc = await C.client.getMessageBoxQuote({ recipient: B.key, messageBox: permBox }, url)
  expectEqual(qc.recipientFee, 0, 'C quote now free')
})

// The client asks with ?message_box= and maps snake_case keys (message_box, recipient_fee,
// created_at); the original server reads ?messageBox= and answers camelCase. Our server
// honours both query spellings and answers camelCase like the original, so the client sees
// the right senders while its messageBox/recipientFee/createdAt come out undefined: exactly
// what it gets from the original (where, in addition, the filter is ignored).
await t.check('listMessageBoxPermissions (client view) and the raw camelCase rows', async () => {
  const list = await B.client.listMessageBoxPermissions({ messageBox: permBox, limit: 10, offset: 0 }, url)
  expectEqual(list.map(p => p.sender).sort(), [A.key, null].sort(), 'senders (filter applied)')
  // ...and its status, computed from the missing recipient_fee, is always payment_required.
  expectEqual(list.map(p => [p.messageBox, p.recipientFee, p.createdAt, p.status]),
    [[undefined, undefined, undefined, 'payment_required'], [undefined, undefined, undefined, 'payment_required']],
    'snake_case fields the client maps')
  const res = await B.client.authFetch.fetch(`${url}/permissions/list?messageBox=${permBox}`, { method: 'GET' })
  const json = await res.json()
  expectEqual(json.totalCount, 2, 'totalCount')
  const rows = Object.fromEntries(json.permissions.map(p => [String(p.sender), [p.messageBox, p.recipientFee]]))
  expectEqual(rows, { null: [permBox, 0], [A.key]: [permBox, -1] }, 'raw rows')
})

await t.check('getMessageBoxQuote (multi): B blocks A, C free by default', async () => {
  const q = await A.client.getMessageBoxQuote({ recipient: [B.key, C.key], messageBox: permBox }, url)
  expectEqual(q.quotesByRecipient.map(x => [x.recipient, x.messageBox, x.deliveryFee, x.recipientFee, x.status]), [
    [B.key, permBox, 0, -1, 'blocked'],
    [C.key, permBox, 0, 0, 'always_allow']
  ], 'quotesByRecipient')
  expectEqual(q.blockedRecipients, [B.key], 'blockedRecipients')
  expectEqual(q.totals, { deliveryFees: 0, recipientFees: 0, totalForPayableRecipients: 0 }, 'totals')
  expectEqual(q.deliveryAgentIdentityKeyByHost, { [url]: serverKey }, 'delivery agent key')
})

// --- a blocked sender -------------------------------------------------------------------------

await t.check('blocked sender: sendMessage surfaces the 403', async () => {
  const e = await expectRejects(A.client.sendMessage({ recipient: B.key, messageBox: permBox, body: 'let me in' }, url), 15_000, 'blocked send')
  expectEqual(e.message, 'Failed to send message: Message sending failed: HTTP 403 - 403', 'error')
})

await t.check('blocked sender: sendMessage with checkPermissions refuses after the quote', async () => {
  const e = await expectRejects(A.client.sendMessage({ recipient: B.key, messageBox: permBox, body: 'let me in', checkPermissions: true }, url), 15_000, 'blocked checked send')
  expectEqual(e.message, 'Permission check failed: You have been blocked from sending messages to this recipient.', 'error')
})

await t.check('blocked sender: multi-recipient send skips the blocker, all-blocked is an error', async () => {
  const partial = await A.client.sendMesagetoRecepients({ recipients: [B.key, C.key], messageBox: permBox, body: 'partial' }, url)
  expectEqual([partial.status, partial.blocked, partial.sent.map(s => s.recipient)], ['success', [B.key], [C.key]], 'partial')
  const none = await A.client.sendMesagetoRecepients({ recipients: [B.key], messageBox: permBox, body: 'none' }, url)
  expectEqual([none.status, none.description], ['error', 'All 1 recipients are blocked.'], 'all blocked')
  const cMessages = await C.client.listMessages({ messageBox: permBox, host: url })
  expectEqual(cMessages.map(m => [m.sender, m.body]), [[A.key, 'partial']], 'C got it')
  await C.client.acknowledgeMessage({ messageIds: cMessages.map(m => m.messageId), host: url })
})

await t.check('the block is per sender: C delivers to B, nothing from A was stored', async () => {
  const r = await C.client.sendMessage({ recipient: B.key, messageBox: permBox, body: 'from C' }, url)
  expectEqual(r.status, 'success', 'C send')
  const messages = await B.client.listMessages({ messageBox: permBox, host: url })
  expectEqual(messages.map(m => [m.messageId, m.sender, m.body]), [[r.messageId, C.key, 'from C']], 'B box')
  await B.client.acknowledgeMessage({ messageIds: [r.messageId], host: url })
})

// --- devices ---------------------------------------------------------------------------------

await t.check('registerDevice (two devices) and listRegisteredDevices with masked tokens', async () => {
  const tokens = { android: 'interop-fcm-token-0123456789abcdef', web: 'interop-web-token-ZYXWVUTSRQponm' }
  const r1 = await B.client.registerDevice({ fcmToken: tokens.android, deviceId: 'pixel-8', platform: 'android' }, url)
  const r2 = await B.client.registerDevice({ fcmToken: tokens.web, platform: 'web' }, url)
  for (const r of [r1, r2]) {
    expectEqual([r.status, r.message], ['success', 'Device registered successfully for push notifications'], 'register result')
    expect(Number.isInteger(r.deviceId) && r.deviceId > 0, `deviceId is the row id: ${r.deviceId}`)
  }
  expect(r1.deviceId !== r2.deviceId, 'distinct row ids')
  const devices = await B.client.listRegisteredDevices(url)
  const got = Object.fromEntries(devices.map(d => [d.platform, [d.id, d.deviceId, d.fcmToken, d.active]]))
  expectEqual(got, {
    android: [r1.deviceId, 'pixel-8', `...${tokens.android.slice(-10)}`, 1],
    web: [r2.deviceId, null, `...${tokens.web.slice(-10)}`, 1]
  }, 'devices')
  for (const d of devices) expect(/Z$/.test(d.createdAt) && /Z$/.test(d.updatedAt), 'timestamps')
  expectEqual(await A.client.listRegisteredDevices(url), [], 'A has none')
})

// --- nothing left the machine ---------------------------------------------------------------

await t.check('no overlay lookup and no request to another origin', async () => {
  expectEqual(lookups, [], 'overlay lookups')
  expectEqual(wire.refused, [], 'refused URLs')
})

t.finish()
