//! AtomicBEEF / BEEF V1 / V2 and BUMP: the byte formats a delivery-fee payment arrives in
//! (BRC-95, BRC-62, BRC-96, BRC-74), parsed and written, and the SDK's structural check of a
//! BEEF (`Beef.verifyValid(allowTxidOnly = false)` of `@bsv/sdk` 2.0.7 / 2.1.0). Sans-IO: bytes
//! in, values and verdicts out; nothing here asks a chain tracker. The roots a tracker would be
//! asked about are returned ([`Verdict::roots`]); the wallet behind the server checks them.
//!
//! Hashes are kept in internal byte order (as serialised); [`display_hex`] gives the usual
//! reversed hex of txids and roots.
//!
//! Where the SDK's reader runs past the end of its input (it then reads `undefined` and goes
//! on), meets a V2 format byte other than 0, 1 or 2 (it reads a raw transaction), or leaves
//! bytes unread, this parser refuses the input: no honest BEEF does any of those, and a value
//! read from beyond the input is not one a check can rely on. A BUMP offset is also held to
//! below 2^31, where the SDK's 32-bit shifts stop meaning anything.

use std::collections::{BTreeMap, HashMap, HashSet};

use sha2::{Digest, Sha256};

/// `0100BEEF` as written (little-endian `0xEFBE0001`).
pub const BEEF_V1: u32 = 0xEFBE_0001;
/// `0200BEEF` as written.
pub const BEEF_V2: u32 = 0xEFBE_0002;
/// The AtomicBEEF prefix `01010101`.
pub const ATOMIC_BEEF: u32 = 0x0101_0101;

/// Largest BUMP offset accepted (the SDK shifts offsets as 32-bit signed integers).
const MAX_OFFSET: u64 = (1 << 31) - 1;

/// A 32-byte hash in internal (serialised) byte order.
pub type Hash = [u8; 32];

/// `SHA-256(SHA-256(data))`.
pub fn sha256d(data: &[u8]) -> Hash {
    Sha256::digest(Sha256::digest(data)).into()
}

/// The usual hex of a txid or merkle root: the internal bytes reversed.
pub fn display_hex(hash: &Hash) -> String {
    let mut reversed = *hash;
    reversed.reverse();
    hex::encode(reversed)
}

/// Why bytes are not a BEEF.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the input ends early")]
    Truncated,
    #[error("{0} bytes follow the BEEF")]
    TrailingBytes(usize),
    #[error("serialized BEEF must start with {BEEF_V1} or {BEEF_V2} but starts with {0}")]
    Version(u32),
    #[error("unknown BEEF V2 transaction format {0}")]
    TxFormat(u8),
    #[error("a count or length does not fit this machine")]
    TooLarge,
    #[error("BUMP offset {0} is beyond 2^31 - 1")]
    Offset(u64),
    #[error("BUMP level 0 is empty")]
    EmptyLevel,
    #[error("BUMP has offset {offset} twice at height {height}")]
    DuplicateOffset { height: usize, offset: u64 },
    #[error("BUMP level-0 leaves compute different roots")]
    MismatchedRoots,
    #[error("BUMP cannot compute a root: {0}")]
    Root(#[from] RootError),
}

/// Why a merkle root cannot be computed from a path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RootError {
    #[error("the hash is not a level-0 leaf of the path")]
    NotInPath,
    #[error("no hash for index {index} at height {height}")]
    MissingHash { index: u64, height: usize },
}

/// A byte reader that refuses to read past its end.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ParseError> {
        let end = self.pos.checked_add(n).ok_or(ParseError::Truncated)?;
        let slice = self.bytes.get(self.pos..end).ok_or(ParseError::Truncated)?;
        self.pos = end;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, ParseError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, ParseError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Result<u64, ParseError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn hash(&mut self) -> Result<Hash, ParseError> {
        Ok(self.take(32)?.try_into().expect("32 bytes"))
    }

    /// Bitcoin's CompactSize.
    fn varint(&mut self) -> Result<u64, ParseError> {
        Ok(match self.u8()? {
            0xfd => u64::from(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes"))),
            0xfe => u64::from(self.u32()?),
            0xff => self.u64()?,
            n => u64::from(n),
        })
    }

    /// A varint used as a count or length.
    fn size(&mut self) -> Result<usize, ParseError> {
        usize::try_from(self.varint()?).map_err(|_| ParseError::TooLarge)
    }
}

/// Reads one value with `read`; bytes left over are an error.
fn read_all<T>(bytes: &[u8], read: impl FnOnce(&mut Reader<'_>) -> Result<T, ParseError>) -> Result<T, ParseError> {
    let mut r = Reader { bytes, pos: 0 };
    let value = read(&mut r)?;
    match bytes.len() - r.pos {
        0 => Ok(value),
        n => Err(ParseError::TrailingBytes(n)),
    }
}

fn write_varint(out: &mut Vec<u8>, n: u64) {
    match n {
        0..=0xfc => out.push(n as u8),
        0xfd..=0xffff => {
            out.push(0xfd);
            out.extend_from_slice(&(n as u16).to_le_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0xfe);
            out.extend_from_slice(&(n as u32).to_le_bytes());
        }
        _ => {
            out.push(0xff);
            out.extend_from_slice(&n.to_le_bytes());
        }
    }
}

/// A transaction input: the output it spends, its unlocking script and sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxIn {
    /// The spent output's txid, internal order.
    pub source_txid: Hash,
    pub source_index: u32,
    pub unlocking_script: Vec<u8>,
    pub sequence: u32,
}

/// A transaction output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxOut {
    pub satoshis: u64,
    pub locking_script: Vec<u8>,
}

/// A parsed transaction. Its txid is the hash of its canonical serialisation (minimal
/// varints), as the SDK computes it from a transaction read out of a BEEF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    pub version: u32,
    pub inputs: Vec<TxIn>,
    pub outputs: Vec<TxOut>,
    pub lock_time: u32,
}

impl Transaction {
    fn read(r: &mut Reader<'_>) -> Result<Transaction, ParseError> {
        let version = r.u32()?;
        let n_in = r.size()?;
        let mut inputs = Vec::new();
        for _ in 0..n_in {
            let source_txid = r.hash()?;
            let source_index = r.u32()?;
            let len = r.size()?;
            let unlocking_script = r.take(len)?.to_vec();
            let sequence = r.u32()?;
            inputs.push(TxIn { source_txid, source_index, unlocking_script, sequence });
        }
        let n_out = r.size()?;
        let mut outputs = Vec::new();
        for _ in 0..n_out {
            let satoshis = r.u64()?;
            let len = r.size()?;
            outputs.push(TxOut { satoshis, locking_script: r.take(len)?.to_vec() });
        }
        let lock_time = r.u32()?;
        Ok(Transaction { version, inputs, outputs, lock_time })
    }

    /// Parses one raw transaction (no bytes may follow).
    pub fn from_bytes(bytes: &[u8]) -> Result<Transaction, ParseError> {
        read_all(bytes, Transaction::read)
    }

    /// The canonical serialisation.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.version.to_le_bytes());
        write_varint(&mut out, self.inputs.len() as u64);
        for i in &self.inputs {
            out.extend_from_slice(&i.source_txid);
            out.extend_from_slice(&i.source_index.to_le_bytes());
            write_varint(&mut out, i.unlocking_script.len() as u64);
            out.extend_from_slice(&i.unlocking_script);
            out.extend_from_slice(&i.sequence.to_le_bytes());
        }
        write_varint(&mut out, self.outputs.len() as u64);
        for o in &self.outputs {
            out.extend_from_slice(&o.satoshis.to_le_bytes());
            write_varint(&mut out, o.locking_script.len() as u64);
            out.extend_from_slice(&o.locking_script);
        }
        out.extend_from_slice(&self.lock_time.to_le_bytes());
        out
    }

    pub fn txid(&self) -> Hash {
        sha256d(&self.to_bytes())
    }
}

/// One leaf of a BUMP level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leaf {
    pub offset: u64,
    /// `None` for a duplicate marker (flag `01`): the sibling is the working hash itself.
    pub hash: Option<Hash>,
    /// Flag `02`: this level-0 hash is a txid the BUMP proves.
    pub txid: bool,
}

/// A merkle path (BUMP, BRC-74): leaves per level, level 0 first, each level sorted by offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerklePath {
    pub block_height: u64,
    pub levels: Vec<Vec<Leaf>>,
}

/// A node found or computed in a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Hash(Hash),
    Duplicate,
}

/// `n >> by`, 0 once every bit is shifted out (a BUMP declares up to 255 levels; the SDK's
/// 32-bit shifts wrap there instead, which no real block reaches).
fn shr(n: u64, by: usize) -> u64 {
    u32::try_from(by).ok().and_then(|by| n.checked_shr(by)).unwrap_or(0)
}

#[cfg(test)]
thread_local! {
    /// Merkle node hashes computed on this thread (the tests bound the work of a check).
    static NODE_HASHES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn parent(left: &Hash, right: &Hash) -> Hash {
    #[cfg(test)]
    NODE_HASHES.with(|n| n.set(n.get() + 1));
    let mut both = [0u8; 64];
    both[..32].copy_from_slice(left);
    both[32..].copy_from_slice(right);
    sha256d(&both)
}

impl MerklePath {
    /// Builds a path and checks it as the SDK's constructor does: level 0 has leaves, no
    /// offset repeats within a level, and every level-0 leaf computes the same root.
    pub fn new(block_height: u64, mut levels: Vec<Vec<Leaf>>) -> Result<MerklePath, ParseError> {
        for level in &mut levels {
            level.sort_by_key(|l| l.offset);
        }
        let path = MerklePath { block_height, levels };
        if path.levels.first().is_none_or(Vec::is_empty) {
            return Err(ParseError::EmptyLevel);
        }
        for (height, level) in path.levels.iter().enumerate() {
            if let Some(offset) = level.windows(2).find(|w| w[0].offset == w[1].offset).map(|w| w[0].offset) {
                return Err(ParseError::DuplicateOffset { height, offset });
            }
        }
        let mut nodes = Nodes::new(&path);
        let mut root = None;
        // A duplicate marker stands for the first leaf that has a hash, as in the SDK.
        let first_hash = path.levels[0].iter().find_map(|l| l.hash);
        for leaf in &path.levels[0] {
            let Some(hash) = leaf.hash.or(first_hash) else {
                return Err(ParseError::Root(RootError::NotInPath));
            };
            let r = path.root_with(&hash, &mut nodes)?;
            if *root.get_or_insert(r) != r {
                return Err(ParseError::MismatchedRoots);
            }
        }
        Ok(path)
    }

    fn read(r: &mut Reader<'_>) -> Result<MerklePath, ParseError> {
        let block_height = r.varint()?;
        let tree_height = usize::from(r.u8()?);
        let mut levels = Vec::with_capacity(tree_height);
        for _ in 0..tree_height {
            let n = r.size()?;
            let mut level = Vec::new();
            for _ in 0..n {
                let offset = r.varint()?;
                if offset > MAX_OFFSET {
                    return Err(ParseError::Offset(offset));
                }
                let flags = r.u8()?;
                let leaf = if flags & 1 == 1 {
                    Leaf { offset, hash: None, txid: false }
                } else {
                    Leaf { offset, hash: Some(r.hash()?), txid: flags & 2 != 0 }
                };
                level.push(leaf);
            }
            levels.push(level);
        }
        MerklePath::new(block_height, levels)
    }

    /// Parses one BUMP (no bytes may follow).
    pub fn from_bytes(bytes: &[u8]) -> Result<MerklePath, ParseError> {
        read_all(bytes, MerklePath::read)
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        write_varint(out, self.block_height);
        out.push(self.levels.len() as u8);
        for level in &self.levels {
            write_varint(out, level.len() as u64);
            for leaf in level {
                write_varint(out, leaf.offset);
                match leaf.hash {
                    None => out.push(1),
                    Some(h) => {
                        out.push(if leaf.txid { 2 } else { 0 });
                        out.extend_from_slice(&h);
                    }
                }
            }
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out);
        out
    }

    /// The block's merkle root computed from `txid`, a level-0 hash of this path
    /// (`MerklePath.computeRoot`).
    pub fn compute_root(&self, txid: &Hash) -> Result<Hash, RootError> {
        self.root_with(txid, &mut Nodes::new(self))
    }

    fn root_with(&self, txid: &Hash, nodes: &mut Nodes) -> Result<Hash, RootError> {
        let index = *nodes.first.get(txid).ok_or(RootError::NotInPath)?;
        if self.levels.len() == 1 && self.levels[0].len() == 1 {
            return Ok(*txid);
        }
        let max_offset = nodes.max_offset0;
        let tree_height = self.levels.len().max((64 - max_offset.leading_zeros()) as usize);
        let mut working = *txid;
        // The climb from (height, position) on depends only on those and the working hash, so
        // a climb that meets an earlier one with the same working hash ends as that one did.
        let mut climbed = Vec::new();
        for height in 0..tree_height {
            let at = (height, shr(index, height));
            if let Some((w, root)) = nodes.climbs.get(&at) {
                if *w == working {
                    let root = *root;
                    nodes.record(climbed, root);
                    return Ok(root);
                }
            }
            climbed.push((at, working));
            let offset = shr(index, height) ^ 1;
            working = match self.find_or_compute(height, offset, nodes) {
                None if self.levels.len() == 1 && shr(index, height) == shr(max_offset, height) => {
                    // The last node of its level in a single-level path: Bitcoin duplicates it.
                    parent(&working, &working)
                }
                None => return Err(RootError::MissingHash { index, height }),
                Some(Node::Duplicate) => parent(&working, &working),
                Some(Node::Hash(h)) if offset % 2 == 1 => parent(&working, &h),
                Some(Node::Hash(h)) => parent(&h, &working),
            };
        }
        nodes.record(climbed, working);
        Ok(working)
    }

    /// `findOrComputeLeaf`: the node at (`height`, `offset`), given or computed from the level
    /// below, memoised in `nodes`.
    fn find_or_compute(&self, height: usize, offset: u64, nodes: &mut Nodes) -> Option<Node> {
        if let Some(found) = nodes.known.get(&(height, offset)) {
            return *found;
        }
        let node = self.compute_node(height, offset, nodes);
        nodes.known.insert((height, offset), node);
        node
    }

    fn compute_node(&self, height: usize, offset: u64, nodes: &mut Nodes) -> Option<Node> {
        let given = self
            .levels
            .get(height)
            .and_then(|level| level.binary_search_by_key(&offset, |l| l.offset).ok().map(|i| &level[i]));
        if let Some(leaf) = given {
            return Some(leaf.hash.map_or(Node::Duplicate, Node::Hash));
        }
        if height == 0 {
            return None;
        }
        let h = height - 1;
        let l = offset << 1;
        let Some(Node::Hash(left)) = self.find_or_compute(h, l, nodes) else { return None };
        match self.find_or_compute(h, l + 1, nodes) {
            Some(Node::Hash(right)) => Some(Node::Hash(parent(&left, &right))),
            Some(Node::Duplicate) => Some(Node::Hash(parent(&left, &left))),
            None if self.levels.len() == 1 && l == shr(nodes.max_offset0, h) => Some(Node::Hash(parent(&left, &left))),
            None => None,
        }
    }
}

/// What root computations on one path share, so checking every leaf of a large path stays
/// near linear (the SDK scans, recomputes and climbs every level from every leaf, which is
/// quadratic and, with 255 declared levels, seconds of hashing for a megabyte of BUMP): the
/// level-0 offset of each hash (its first leaf, as the SDK's `indexOf` finds it), the largest
/// level-0 offset, the nodes already found or computed by (height, offset), and the climbs
/// already made: the working hash at each (height, position) and the root it led to.
struct Nodes {
    first: HashMap<Hash, u64>,
    max_offset0: u64,
    known: HashMap<(usize, u64), Option<Node>>,
    climbs: HashMap<(usize, u64), (Hash, Hash)>,
}

impl Nodes {
    fn new(path: &MerklePath) -> Nodes {
        let mut first = HashMap::new();
        for leaf in &path.levels[0] {
            if let Some(h) = leaf.hash {
                first.entry(h).or_insert(leaf.offset);
            }
        }
        let max_offset0 = path.levels[0].iter().map(|l| l.offset).max().unwrap_or(0);
        Nodes { first, max_offset0, known: HashMap::new(), climbs: HashMap::new() }
    }

    /// Remembers a climb's steps and its root (a step already known keeps its first climb,
    /// which is the one a later climb with the same working hash repeats).
    fn record(&mut self, steps: Vec<((usize, u64), Hash)>, root: Hash) {
        for (at, working) in steps {
            self.climbs.entry(at).or_insert((working, root));
        }
    }
}

/// One transaction of a BEEF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BeefTx {
    /// A full transaction, with the index of the BUMP that proves it, if any.
    Raw { tx: Transaction, bump: Option<usize> },
    /// Only its txid (V2 format `02`): the receiver is assumed to know it.
    TxidOnly(Hash),
}

impl BeefTx {
    pub fn txid(&self) -> Hash {
        match self {
            BeefTx::Raw { tx, .. } => tx.txid(),
            BeefTx::TxidOnly(txid) => *txid,
        }
    }
}

/// A parsed BEEF, with the subject txid when it came as AtomicBEEF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Beef {
    /// [`BEEF_V1`] or [`BEEF_V2`].
    pub version: u32,
    pub atomic_txid: Option<Hash>,
    pub bumps: Vec<MerklePath>,
    pub txs: Vec<BeefTx>,
}

/// The SDK's structural verdict on a BEEF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub valid: bool,
    /// The merkle root each proven height computes (internal order): what a chain tracker
    /// must confirm, once per height.
    pub roots: BTreeMap<u64, Hash>,
}

impl Beef {
    /// Parses AtomicBEEF, BEEF V1 or BEEF V2 (`Beef.fromBinary`; no bytes may follow).
    pub fn from_bytes(bytes: &[u8]) -> Result<Beef, ParseError> {
        read_all(bytes, Beef::read)
    }

    fn read(r: &mut Reader<'_>) -> Result<Beef, ParseError> {
        let mut version = r.u32()?;
        let mut atomic_txid = None;
        if version == ATOMIC_BEEF {
            atomic_txid = Some(r.hash()?);
            version = r.u32()?;
        }
        if version != BEEF_V1 && version != BEEF_V2 {
            return Err(ParseError::Version(version));
        }
        let mut bumps = Vec::new();
        for _ in 0..r.size()? {
            bumps.push(MerklePath::read(r)?);
        }
        let mut txs = Vec::new();
        for _ in 0..r.size()? {
            let tx = if version == BEEF_V2 {
                match r.u8()? {
                    0 => BeefTx::Raw { tx: Transaction::read(r)?, bump: None },
                    1 => {
                        let bump = Some(r.size()?);
                        BeefTx::Raw { tx: Transaction::read(r)?, bump }
                    }
                    2 => BeefTx::TxidOnly(r.hash()?),
                    other => return Err(ParseError::TxFormat(other)),
                }
            } else {
                let tx = Transaction::read(r)?;
                let bump = if r.u8()? != 0 { Some(r.size()?) } else { None };
                BeefTx::Raw { tx, bump }
            };
            txs.push(tx);
        }
        Ok(Beef { version, atomic_txid, bumps, txs })
    }

    /// Writes the BEEF in its version, with the AtomicBEEF prefix when it has a subject txid.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(txid) = &self.atomic_txid {
            out.extend_from_slice(&ATOMIC_BEEF.to_le_bytes());
            out.extend_from_slice(txid);
        }
        out.extend_from_slice(&self.version.to_le_bytes());
        write_varint(&mut out, self.bumps.len() as u64);
        for b in &self.bumps {
            b.write(&mut out);
        }
        write_varint(&mut out, self.txs.len() as u64);
        for t in &self.txs {
            match (t, self.version) {
                (BeefTx::TxidOnly(txid), _) => {
                    out.push(2);
                    out.extend_from_slice(txid);
                }
                (BeefTx::Raw { tx, bump: None }, BEEF_V2) => {
                    out.push(0);
                    out.extend_from_slice(&tx.to_bytes());
                }
                (BeefTx::Raw { tx, bump: Some(i) }, BEEF_V2) => {
                    out.push(1);
                    write_varint(&mut out, *i as u64);
                    out.extend_from_slice(&tx.to_bytes());
                }
                (BeefTx::Raw { tx, bump }, _) => {
                    out.extend_from_slice(&tx.to_bytes());
                    match bump {
                        None => out.push(0),
                        Some(i) => {
                            out.push(1);
                            write_varint(&mut out, *i as u64);
                        }
                    }
                }
            }
        }
        out
    }

    /// The first full transaction with this txid (`findTxid`).
    pub fn find(&self, txid: &Hash) -> Option<&Transaction> {
        self.txs.iter().find_map(|t| match t {
            BeefTx::Raw { tx, .. } if tx.txid() == *txid => Some(tx),
            _ => None,
        })
    }

    /// `Beef.verifyValid(false)`: no txid-only entry; every transaction is proven by its BUMP
    /// or has all its inputs' parents in the BEEF, recursively down to proven ones; every
    /// txid a BUMP proves computes its BUMP's root, and BUMPs of one height agree on it;
    /// each transaction that names a BUMP is a level-0 leaf of it. The SDK sorts the
    /// transactions before it checks, so their order in the bytes does not matter. Where the
    /// SDK throws (a root that cannot be computed, a BUMP index past the last BUMP) the
    /// verdict is "invalid".
    pub fn verify_valid(&self) -> Verdict {
        let mut verdict = Verdict { valid: false, roots: BTreeMap::new() };
        let txids: Vec<Hash> = self.txs.iter().map(BeefTx::txid).collect();
        if !self.dependencies_resolve(&txids) {
            return verdict;
        }
        let mut shared: Vec<Nodes> = self.bumps.iter().map(Nodes::new).collect();
        for (bump, nodes) in self.bumps.iter().zip(&mut shared) {
            for leaf in bump.levels[0].iter().filter(|l| l.txid) {
                let Some(hash) = leaf.hash else { continue };
                let Ok(root) = bump.root_with(&hash, nodes) else { return verdict };
                if *verdict.roots.entry(bump.block_height).or_insert(root) != root {
                    return verdict;
                }
            }
        }
        for (t, txid) in self.txs.iter().zip(&txids) {
            if let BeefTx::Raw { bump: Some(i), .. } = t {
                let Some(nodes) = shared.get(*i) else { return verdict };
                if !nodes.first.contains_key(txid) {
                    return verdict;
                }
            }
        }
        verdict.valid = true;
        verdict
    }

    /// `sortTxs` finding nothing wrong: no txid-only entry, no input whose parent is absent,
    /// and every unproven transaction chains to proven ones (a worklist instead of the SDK's
    /// repeated passes, same outcome).
    fn dependencies_resolve(&self, txids: &[Hash]) -> bool {
        let present: HashSet<&Hash> = txids.iter().collect();
        let mut valid: HashSet<Hash> = HashSet::new();
        // Unproven transactions: (txid, its distinct parents).
        let mut pending: Vec<(Hash, HashSet<Hash>)> = Vec::new();
        for (t, txid) in self.txs.iter().zip(txids) {
            match t {
                BeefTx::TxidOnly(_) => return false,
                BeefTx::Raw { bump: Some(_), .. } => {
                    valid.insert(*txid);
                }
                BeefTx::Raw { tx, bump: None } => {
                    let parents: HashSet<Hash> = tx.inputs.iter().map(|i| i.source_txid).collect();
                    if !parents.iter().all(|p| present.contains(p)) {
                        return false;
                    }
                    pending.push((*txid, parents));
                }
            }
        }
        let mut waiting: HashMap<Hash, Vec<usize>> = HashMap::new();
        let mut missing: Vec<usize> = Vec::with_capacity(pending.len());
        let mut ready: Vec<usize> = Vec::new();
        for (i, (_, parents)) in pending.iter().enumerate() {
            let unmet = parents.iter().filter(|p| !valid.contains(*p)).count();
            for p in parents.iter().filter(|p| !valid.contains(*p)) {
                waiting.entry(*p).or_default().push(i);
            }
            missing.push(unmet);
            if unmet == 0 {
                ready.push(i);
            }
        }
        let mut resolved = 0;
        while let Some(i) = ready.pop() {
            resolved += 1;
            let txid = pending[i].0;
            if !valid.insert(txid) {
                continue;
            }
            for &j in waiting.get(&txid).map_or(&[][..], Vec::as_slice) {
                missing[j] -= 1;
                if missing[j] == 0 {
                    ready.push(j);
                }
            }
        }
        resolved == pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(byte: u8) -> Hash {
        [byte; 32]
    }

    fn tx(parents: &[Hash], sats: u64) -> Transaction {
        Transaction {
            version: 1,
            inputs: parents
                .iter()
                .map(|p| TxIn { source_txid: *p, source_index: 0, unlocking_script: vec![0x51], sequence: u32::MAX })
                .collect(),
            outputs: vec![TxOut { satoshis: sats, locking_script: vec![0x76, 0xa9] }],
            lock_time: 0,
        }
    }

    fn proven(t: &Transaction, height: u64, sibling: u8) -> MerklePath {
        let leaves = vec![
            Leaf { offset: 0, hash: Some(t.txid()), txid: true },
            Leaf { offset: 1, hash: Some(h(sibling)), txid: false },
        ];
        MerklePath::new(height, vec![leaves]).unwrap()
    }

    #[test]
    fn varints_round_trip_at_every_width() {
        for n in [0u64, 0xfc, 0xfd, 0xffff, 0x1_0000, 0xffff_ffff, 0x1_0000_0000, u64::MAX] {
            let mut out = Vec::new();
            write_varint(&mut out, n);
            let mut r = Reader { bytes: &out, pos: 0 };
            assert_eq!(r.varint().unwrap(), n);
            assert_eq!(r.pos, out.len());
        }
    }

    #[test]
    fn every_truncation_is_refused() {
        let parent = tx(&[h(0)], 10_000);
        let child = tx(&[parent.txid()], 9_000);
        let beef = Beef {
            version: BEEF_V1,
            atomic_txid: Some(child.txid()),
            bumps: vec![proven(&parent, 900, 0xcd)],
            txs: vec![BeefTx::Raw { tx: parent, bump: Some(0) }, BeefTx::Raw { tx: child, bump: None }],
        };
        let bytes = beef.to_bytes();
        assert_eq!(Beef::from_bytes(&bytes).unwrap(), beef);
        for n in 0..bytes.len() {
            assert!(Beef::from_bytes(&bytes[..n]).is_err(), "{n} bytes parsed");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Beef::from_bytes(&longer), Err(ParseError::TrailingBytes(1)));
    }

    #[test]
    fn v2_round_trips_with_every_format() {
        let parent = tx(&[h(0)], 10_000);
        let child = tx(&[parent.txid()], 9_000);
        let beef = Beef {
            version: BEEF_V2,
            atomic_txid: None,
            bumps: vec![proven(&parent, 7, 1)],
            txs: vec![
                BeefTx::TxidOnly(h(9)),
                BeefTx::Raw { tx: parent, bump: Some(0) },
                BeefTx::Raw { tx: child, bump: None },
            ],
        };
        assert_eq!(Beef::from_bytes(&beef.to_bytes()).unwrap(), beef);
        // Format byte 3 is refused (the SDK would read a raw transaction there).
        let solo = Beef { txs: vec![BeefTx::TxidOnly(h(9))], bumps: vec![], ..beef.clone() };
        let mut odd = solo.to_bytes();
        let format_at = odd.len() - 33;
        odd[format_at] = 3;
        assert_eq!(Beef::from_bytes(&odd), Err(ParseError::TxFormat(3)));
    }

    #[test]
    fn roots_of_paths() {
        // Four leaves: the root of each is the classic tree.
        let leaves: Vec<Hash> = (1..=4).map(h).collect();
        let root = parent(&parent(&leaves[0], &leaves[1]), &parent(&leaves[2], &leaves[3]));
        let path = MerklePath::new(
            5,
            vec![
                vec![
                    Leaf { offset: 2, hash: Some(leaves[2]), txid: true },
                    Leaf { offset: 3, hash: Some(leaves[3]), txid: false },
                ],
                vec![Leaf { offset: 0, hash: Some(parent(&leaves[0], &leaves[1])), txid: false }],
            ],
        )
        .unwrap();
        assert_eq!(path.compute_root(&leaves[2]).unwrap(), root);
        assert_eq!(MerklePath::from_bytes(&path.to_bytes()).unwrap(), path);
        // A compound single-level path: every leaf given, level 1 computed.
        let flat = MerklePath::new(
            5,
            vec![(0..4).map(|i| Leaf { offset: i, hash: Some(leaves[i as usize]), txid: i == 1 }).collect()],
        )
        .unwrap();
        assert_eq!(flat.compute_root(&leaves[1]).unwrap(), root);
        // Three leaves in one level: the last one is duplicated.
        let three = MerklePath::new(
            5,
            vec![(0..3).map(|i| Leaf { offset: i, hash: Some(leaves[i as usize]), txid: false }).collect()],
        )
        .unwrap();
        assert_eq!(
            three.compute_root(&leaves[0]).unwrap(),
            parent(&parent(&leaves[0], &leaves[1]), &parent(&leaves[2], &leaves[2]))
        );
        // A single leaf is its own root; an explicit duplicate marker doubles the working hash.
        let solo = MerklePath::new(1, vec![vec![Leaf { offset: 0, hash: Some(leaves[0]), txid: true }]]).unwrap();
        assert_eq!(solo.compute_root(&leaves[0]).unwrap(), leaves[0]);
        let dup = MerklePath::new(
            1,
            vec![vec![
                Leaf { offset: 0, hash: Some(leaves[0]), txid: true },
                Leaf { offset: 1, hash: None, txid: false },
            ]],
        )
        .unwrap();
        assert_eq!(dup.compute_root(&leaves[0]).unwrap(), parent(&leaves[0], &leaves[0]));
        assert_eq!(dup.compute_root(&leaves[1]), Err(RootError::NotInPath));
    }

    #[test]
    fn malformed_paths() {
        assert_eq!(MerklePath::new(1, vec![vec![]]), Err(ParseError::EmptyLevel));
        let l = |offset, byte| Leaf { offset, hash: Some(h(byte)), txid: false };
        assert_eq!(
            MerklePath::new(1, vec![vec![l(0, 1), l(0, 2)]]),
            Err(ParseError::DuplicateOffset { height: 0, offset: 0 })
        );
        // Two levels, the sibling at level 1 missing: no root.
        assert!(matches!(
            MerklePath::new(1, vec![vec![l(0, 1), l(1, 2)], vec![]]),
            Err(ParseError::Root(RootError::MissingHash { index: 0, height: 1 }))
        ));
        // Leaves 0 and 3 of a two-level path with their level-1 siblings given wrongly.
        assert_eq!(
            MerklePath::new(1, vec![vec![l(0, 1), l(1, 2), l(2, 3), l(3, 4)], vec![l(0, 5), l(1, 6)]]),
            Err(ParseError::MismatchedRoots)
        );
        let mut bytes = Vec::new();
        write_varint(&mut bytes, 1);
        bytes.push(1);
        bytes.push(1);
        write_varint(&mut bytes, 1 << 31);
        bytes.push(1);
        assert_eq!(MerklePath::from_bytes(&bytes), Err(ParseError::Offset(1 << 31)));
    }

    #[test]
    fn structural_verdicts() {
        let parent_tx = tx(&[h(0)], 10_000);
        let child = tx(&[parent_tx.txid()], 9_000);
        let grandchild = tx(&[child.txid()], 8_000);
        let bump = proven(&parent_tx, 900, 0xcd);
        let raw = |t: &Transaction, bump| BeefTx::Raw { tx: t.clone(), bump };
        let beef = |bumps: Vec<MerklePath>, txs: Vec<BeefTx>| Beef { version: BEEF_V1, atomic_txid: None, bumps, txs };

        let ok = beef(vec![bump.clone()], vec![raw(&parent_tx, Some(0)), raw(&child, None), raw(&grandchild, None)]);
        let v = ok.verify_valid();
        assert!(v.valid);
        assert_eq!(v.roots.keys().copied().collect::<Vec<_>>(), [900]);
        assert_eq!(v.roots[&900], bump.compute_root(&parent_tx.txid()).unwrap());
        // Order in the bytes does not matter (the SDK sorts first).
        assert!(
            beef(vec![bump.clone()], vec![raw(&grandchild, None), raw(&child, None), raw(&parent_tx, Some(0))])
                .verify_valid()
                .valid
        );
        // A parent missing, a txid-only parent, a BUMP index past the end, a tx not in its BUMP.
        assert!(!beef(vec![bump.clone()], vec![raw(&parent_tx, Some(0)), raw(&grandchild, None)]).verify_valid().valid);
        assert!(!beef(vec![], vec![BeefTx::TxidOnly(parent_tx.txid()), raw(&child, None)]).verify_valid().valid);
        assert!(!beef(vec![bump.clone()], vec![raw(&parent_tx, Some(1)), raw(&child, None)]).verify_valid().valid);
        assert!(!beef(vec![bump.clone()], vec![raw(&child, Some(0))]).verify_valid().valid);
        // A cycle of unproven transactions never resolves.
        let a = tx(&[h(7)], 1);
        let b = tx(&[a.txid()], 1);
        let a2 = Transaction { inputs: vec![TxIn { source_txid: b.txid(), ..a.inputs[0].clone() }], ..a };
        assert!(!beef(vec![], vec![raw(&a2, None), raw(&b, None)]).verify_valid().valid);
        // Two BUMPs at one height with different roots.
        let other = tx(&[h(1)], 5);
        let conflicting =
            beef(vec![bump.clone(), proven(&other, 900, 0xab)], vec![raw(&parent_tx, Some(0)), raw(&other, Some(1))]);
        assert!(!conflicting.verify_valid().valid);
        // The same at two heights is fine, with one root per height.
        let two = beef(vec![bump, proven(&other, 901, 0xab)], vec![raw(&parent_tx, Some(0)), raw(&other, Some(1))]);
        let v = two.verify_valid();
        assert!(v.valid);
        assert_eq!(v.roots.len(), 2);
    }

    /// A large BUMP (4096 level-0 leaves, every one a proven txid, and 240 more declared
    /// levels with one sibling each): parsing it checks every leaf's root, the verdict checks
    /// them again. The merkle hashing stays linear in the leaves; the SDK's way (every leaf
    /// climbs all 255 levels, and scans for its hash) is over a million hashes here, seconds
    /// of CPU for a request body's worth of BUMP.
    #[test]
    fn large_paths_stay_linear() {
        let n: u64 = 1 << 12;
        let mut levels =
            vec![(0..n).map(|i| Leaf { offset: i, hash: Some(sha256d(&i.to_le_bytes())), txid: true }).collect()];
        levels.extend(vec![vec![]; 11]);
        levels.extend((12..255).map(|_| vec![Leaf { offset: 1, hash: Some(h(7)), txid: false }]));
        let bytes = Beef {
            version: BEEF_V2,
            atomic_txid: None,
            bumps: vec![MerklePath { block_height: 1, levels }],
            txs: vec![],
        }
        .to_bytes();
        let hashes = || NODE_HASHES.with(|c| c.get());
        let before = hashes();
        let parsed = Beef::from_bytes(&bytes).unwrap();
        let parsing = hashes() - before;
        let verdict = parsed.verify_valid();
        let verifying = hashes() - before - parsing;
        assert!(verdict.valid);
        assert_eq!(verdict.roots.len(), 1);
        // Each pass: the n - 1 inner nodes below level 12, about 2n climb steps (a climb
        // stops where an earlier one passed), and one climb to the top.
        for (what, count) in [("parsing", parsing), ("verifying", verifying)] {
            assert!(count < 4 * n, "{what}: {count} hashes for {n} leaves");
        }
    }

    #[test]
    fn display_order_is_reversed() {
        let mut x = [0u8; 32];
        x[0] = 0xab;
        assert!(display_hex(&x).ends_with("ab"));
        assert!(display_hex(&x).starts_with("00"));
    }
}
