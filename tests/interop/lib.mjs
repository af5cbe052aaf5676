// Shared plumbing for the interop scripts: argument parsing, a check runner that prints one
// PASS/FAIL line per check and never hangs, a network tripwire, and the line protocol the
// Rust harness (tests/interop.rs) uses to restart the server under a running script.
//
// Output contract (parsed by tests/interop.rs):
//   PASS <suite>/<check>
//   FAIL <suite>/<check>: <reason>
//   NOTE <suite>: <text>                 observations that are not failures
//   @@CONTROL <request>                  asks the harness to act (e.g. "restart")
//   <suite>: <n> passed, <m> failed      the last line; exit code 0 only when m == 0
// The harness answers a control request on stdin with "@@CONTROL <request> done" or
// "@@CONTROL <request> failed <reason>".

import { createInterface } from 'node:readline'
import { isDeepStrictEqual, inspect } from 'node:util'

/** Parses `--name value` pairs; every option may also come from the environment variable `env`. */
export function parseArgs (spec) {
  const argv = process.argv.slice(2)
  const out = {}
  for (const [name, { env, required, flag }] of Object.entries(spec)) {
    const i = argv.indexOf(`--${name}`)
    if (flag === true) {
      out[name] = i >= 0 || (env != null && process.env[env] === '1')
      continue
    }
    const value = i >= 0 ? argv[i + 1] : (env != null ? process.env[env] : undefined)
    if ((value == null || value === '') && required === true) {
      console.error(`usage: node ${process.argv[1]} ${Object.keys(spec).map(n => `--${n} …`).join(' ')}`)
      console.error(`missing --${name}${env != null ? ` (or env ${env})` : ''}`)
      process.exit(2)
    }
    out[name] = value
  }
  return out
}

/** Thrown by the `expect*` helpers and by timeouts; the message is the whole story. */
export class CheckError extends Error {}

/** Rejects with a clear error when `promise` does not settle within `ms`. */
export async function withTimeout (promise, ms, what) {
  let timer
  const timeout = new Promise((_resolve, reject) => {
    timer = setTimeout(() => reject(new CheckError(`timed out after ${ms} ms: ${what}`)), ms)
  })
  try {
    return await Promise.race([promise, timeout])
  } finally {
    clearTimeout(timer)
  }
}

export function expect (condition, message) {
  if (!condition) throw new CheckError(message)
}

export function expectEqual (actual, expected, what) {
  if (!isDeepStrictEqual(actual, expected)) {
    throw new CheckError(`${what}: expected ${inspect(expected, { depth: 6 })}, got ${inspect(actual, { depth: 6 })}`)
  }
}

/** Awaits `promise` (bounded) and returns the error it rejects with; fails if it resolves. */
export async function expectRejects (promise, ms, what) {
  try {
    const value = await withTimeout(promise, ms, what)
    throw new CheckError(`${what}: expected an error, got ${inspect(value, { depth: 4 })}`)
  } catch (e) {
    if (e instanceof CheckError) throw e
    return e
  }
}

/**
 * Runs checks one after another. Each check gets its own time limit; a check that throws or
 * times out is a FAIL and the run goes on. A watchdog ends the process if the whole run
 * overstays, so CI can never sit on a stuck promise.
 */
export class Checks {
  constructor (suite, { totalTimeoutMs = 240_000 } = {}) {
    this.suite = suite
    this.passed = 0
    this.failed = 0
    const watchdog = setTimeout(() => {
      this.line(`FAIL ${this.suite}/watchdog: the whole run exceeded ${totalTimeoutMs} ms`)
      this.failed++
      this.finish()
    }, totalTimeoutMs)
    watchdog.unref()
    process.on('unhandledRejection', (reason) => {
      this.note(`unhandled rejection (ignored): ${reason?.stack ?? reason}`)
    })
  }

  line (text) {
    process.stdout.write(`${text}\n`)
  }

  note (text) {
    this.line(`NOTE ${this.suite}: ${text}`)
  }

  /** Runs `fn`; returns its value, or undefined when it failed. */
  async check (name, fn, { timeoutMs = 20_000 } = {}) {
    const started = Date.now()
    try {
      const value = await withTimeout(Promise.resolve().then(fn), timeoutMs, name)
      this.passed++
      this.line(`PASS ${this.suite}/${name} (${Date.now() - started} ms)`)
      return value
    } catch (e) {
      this.failed++
      const reason = e instanceof CheckError ? e.message : (e?.stack ?? String(e))
      this.line(`FAIL ${this.suite}/${name}: ${reason}`)
      return undefined
    }
  }

  /** Prints the summary line and exits: 0 when every check passed. */
  finish () {
    this.line(`${this.suite}: ${this.passed} passed, ${this.failed} failed`)
    process.exit(this.failed === 0 && this.passed > 0 ? 0 : 1)
  }
}

/**
 * Wraps globalThis.fetch so that any request to an origin other than `allowedOrigin` (one
 * origin, or an array of them: the nodes of a fleet) fails at once and is recorded (the machine has no internet; an overlay lookup must never be
 * attempted), and counts what goes to the server. Must run BEFORE @bsv/sdk is imported:
 * its fetch transport binds globalThis.fetch when the module loads.
 * Returns { refused: [url], handshakes: () => number of POSTs to /.well-known/auth }.
 */
export function installNetworkTripwire (allowedOrigin) {
  const refused = []
  let handshakes = 0
  const allowed = [allowedOrigin].flat()
  const realFetch = globalThis.fetch.bind(globalThis)
  globalThis.fetch = async (input, init) => {
    const url = new URL(typeof input === 'string' ? input : (input?.url ?? String(input)))
    if (!allowed.includes(url.origin)) {
      refused.push(url.href)
      throw new Error(`interop tripwire: refused a request outside the server under test: ${url.href}`)
    }
    if (url.pathname === '/.well-known/auth') handshakes++
    return await realFetch(input, init)
  }
  return { refused, handshakes: () => handshakes }
}

/** The harness's answers on stdin, one line at a time. */
let stdinQueue
function nextStdinLine () {
  if (stdinQueue == null) {
    stdinQueue = { lines: [], waiters: [] }
    const rl = createInterface({ input: process.stdin })
    rl.on('line', (l) => {
      const w = stdinQueue.waiters.shift()
      if (w != null) w(l)
      else stdinQueue.lines.push(l)
    })
  }
  const l = stdinQueue.lines.shift()
  if (l != null) return Promise.resolve(l)
  return new Promise((resolve) => stdinQueue.waiters.push(resolve))
}

/** Asks the harness to do `request` (e.g. "restart") and waits for its answer. */
export async function control (request, ms = 90_000) {
  process.stdout.write(`@@CONTROL ${request}\n`)
  for (;;) {
    const l = await withTimeout(nextStdinLine(), ms, `the harness answering "${request}"`)
    if (l === `@@CONTROL ${request} done`) return
    if (l.startsWith(`@@CONTROL ${request} failed`)) throw new Error(`harness: ${l}`)
  }
}

/**
 * A queue per key: `push(key, value)` from event handlers, `next(key, ms)` takes the oldest
 * value or waits for one (bounded), `all(key)` is everything received so far.
 */
export class Inbox {
  constructor () { this.queues = new Map(); this.waiters = new Map(); this.seen = new Map() }
  push (key, value) {
    if (!this.seen.has(key)) this.seen.set(key, [])
    this.seen.get(key).push(value)
    const w = this.waiters.get(key)?.shift()
    if (w != null) return w(value)
    if (!this.queues.has(key)) this.queues.set(key, [])
    this.queues.get(key).push(value)
  }

  next (key, ms = 10_000) {
    const q = this.queues.get(key)
    if (q != null && q.length > 0) return Promise.resolve(q.shift())
    return withTimeout(new Promise((resolve) => {
      if (!this.waiters.has(key)) this.waiters.set(key, [])
      this.waiters.get(key).push(resolve)
    }), ms, `event "${key}"`)
  }

  all (key) { return this.seen.get(key) ?? [] }
  pending (key) { return this.queues.get(key)?.length ?? 0 }
}

/** POSTs JSON through an AuthFetch and returns { res, json }. */
export async function postJson (authFetch, url, body) {
  const res = await authFetch.fetch(url, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body)
  })
  return { res, json: await res.json() }
}

/** GETs through an AuthFetch and returns { res, json }. */
export async function getJson (authFetch, url) {
  const res = await authFetch.fetch(url, { method: 'GET' })
  return { res, json: await res.json() }
}
