// A small express 4 server behind the real @bsv/auth-express-middleware 2.0.5, wired the
// way the original MessageBox server wires it (JSON body parser first, then the auth
// middleware with defaults). tests/interop.rs points our Rust AuthClient at it to prove
// that our client side interoperates with the TypeScript server side.
//
//   node js_server.mjs --key <64 hex server private key> [--port 0]
//
// Prints "READY <port> <server identity key>" once listening; exits 0 on SIGTERM.

import { parseArgs } from './lib.mjs'
import express from 'express'
import { createAuthMiddleware } from '@bsv/auth-express-middleware'
import { PrivateKey, ProtoWallet } from '@bsv/sdk'

const args = parseArgs({
  key: { env: 'JS_SERVER_KEY', required: true },
  port: { env: 'JS_SERVER_PORT' }
})
const wallet = new ProtoWallet(PrivateKey.fromHex(args.key))
const identity = (await wallet.getPublicKey({ identityKey: true })).publicKey

const app = express()
app.use(express.json({ limit: '1gb', type: 'application/json' }))
app.use(createAuthMiddleware({ wallet }))

// Echoes the parsed JSON body and who the middleware says sent it.
app.post('/echo', (req, res) => {
  res.json({ echo: req.body, identity: req.auth.identityKey })
})

// Echoes the parsed query (repeated keys become arrays, as with the original's qs).
app.get('/query', (req, res) => {
  res.json({ query: req.query, identity: req.auth.identityKey })
})

// A signed non-200 answer with a JSON error body, like the MessageBox routes' 400s.
app.post('/fail', (req, res) => {
  res.status(400).json({ status: 'error', code: 'ERR_INTEROP', description: `bad input: ${JSON.stringify(req.body)}` })
})

// A custom x-bsv-* response header: it is part of the signed response payload.
app.get('/custom-header', (req, res) => {
  res.set('x-bsv-custom', 'abc 123')
  res.json({ ok: true })
})

// An empty body: the middleware signs it as "absent" (-1) while clients rebuild it as a
// zero-length body, so no client can verify it (brc103.md §12.2). Kept to pin that our
// client rejects it rather than accepting an unverifiable response.
app.get('/empty', (req, res) => {
  res.status(200).end()
})

const server = app.listen(Number(args.port ?? 0), '127.0.0.1', () => {
  process.stdout.write(`READY ${server.address().port} ${identity}\n`)
})

process.on('SIGTERM', () => {
  server.close()
  server.closeAllConnections?.()
  process.exit(0)
})
