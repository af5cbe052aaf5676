// Stand-in chain services for wallet-toolbox (from the payment vectors' fake_services.js):
// a chain tracker that accepts the merkle roots registered in a JSON file shared by the
// processes of one test ({"<height>": "<root hex>"}), block headers carrying those roots,
// and a broadcaster that records and accepts. No network.

import { readFileSync, writeFileSync, existsSync } from 'node:fs'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { Utils } = require('@bsv/sdk')

export function readRoots (file) {
  return existsSync(file) ? JSON.parse(readFileSync(file, 'utf8')) : {}
}

/** Registers `root` for `height` (read again by every tracker call, in every process). */
export function addRoot (file, height, root) {
  const roots = readRoots(file)
  roots[height] = root
  writeFileSync(file, JSON.stringify(roots))
}

export class ChainStandIn {
  /** `rootsFiles`: one file or several (a block root known to any of them is valid). */
  constructor (chain, rootsFiles) {
    this.chain = chain
    this.rootsFiles = [rootsFiles].flat()
    this.posted = []
    this.calls = []
  }

  root (height) { return this.rootsFiles.map(f => readRoots(f)[height]).find(r => r != null) }

  async getChainTracker () {
    const self = this
    return {
      async isValidRootForHeight (root, height) { self.calls.push(['isValidRootForHeight', root, height]); return self.root(height) === root },
      async currentHeight () { return 1000 }
    }
  }

  headerFor (height) {
    // version(4) prevHash(32) merkleRoot(32, LE) time(4) bits(4) nonce(4)
    const w = new Utils.Writer()
    w.writeUInt32LE(1); w.write(new Array(32).fill(0)); w.writeReverse(Utils.toArray(this.root(height), 'hex'))
    w.writeUInt32LE(1700000000); w.writeUInt32LE(0x1d00ffff); w.writeUInt32LE(height)
    return w.toArray()
  }

  async getHeaderForHeight (height) { this.calls.push(['getHeaderForHeight', height]); return this.headerFor(height) }
  async getHeight () { return 1000 }
  async postBeef (beef, txids) {
    this.calls.push(['postBeef', txids]); this.posted.push(txids)
    return [{ name: 'StandIn', status: 'success', txidResults: txids.map(txid => ({ txid, status: 'success' })) }]
  }

  async nLockTimeIsFinal () { return true }
  async getStatusForTxids (txids) { return { name: 'StandIn', status: 'success', results: txids.map(txid => ({ txid, status: 'known', depth: 0 })) } }
  getServicesCallHistory () { return {} }
}
