// scripts/ton/golden.js: golden vectors for cocoon's payment-channel cells, computed
// with TON's own JS library (@ton/core, @ton/crypto) from fixed keys and states, the
// layouts written as tonweb's PaymentUtils and async-channel.func write them.
// Output (JSON on stdout) is committed as protocol/tests/fixtures/ton-golden.json and
// asserted by protocol/tests/golden.rs.
//   cd scripts/ton && npm ci && node golden.js > ../../protocol/tests/fixtures/ton-golden.json
const { beginCell, Address } = require('@ton/core');
const { keyPairFromSeed, sign } = require('@ton/crypto');

const seedA = Buffer.from([...Array(32).keys()]);              // 00 01 .. 1f
const seedB = Buffer.from([...Array(32).keys()].map(i => i + 32)); // 20 .. 3f
const kA = keyPairFromSeed(seedA);
const kB = keyPairFromSeed(seedB);
const CHANNEL_ID = 0x0123456789abcdef0fedcba987654321n;

const OP = {
  top_up: 0x67c7d281, init: 0x0e0620c2, coop_close: 0x5577587e, coop_commit: 0x79a126ef,
  start_uncoop: 0x1f151acf, challenge: 0x088eaa32, settle: 0x66f6f069, finish: 0x25432a91,
};
const TAG = {
  init: 0x696e6974, coop_close: 0x436c6f73, coop_commit: 0x43436d74, start_uncoop: 0x556e436c,
  challenge: 0x43686751, settle: 0x436c436e, state: 0x43685374,
};

const body = (seqno, sent) =>
  beginCell().storeUint(seqno, 64).storeCoins(sent).storeBit(0).endCell();
const semiState = (seqno, sent, cp) => {
  const b = beginCell().storeUint(TAG.state, 32).storeUint(CHANNEL_ID, 128)
    .storeSlice(body(seqno, sent).beginParse());
  if (cp) b.storeBit(1).storeRef(body(cp[0], cp[1])); else b.storeBit(0);
  return b.endCell();
};
const signCell = (c, kp) => sign(c.hash(), kp.secretKey);
const signed = (c, kp) => beginCell().storeBuffer(signCell(c, kp)).storeSlice(c.beginParse()).endCell();
const hex = (c) => c.toBoc({ idx: false, crc32: false }).toString('hex');
const oneSig = (op, isA, kp, c) =>
  beginCell().storeUint(op, 32).storeBit(isA).storeBuffer(signCell(c, kp)).storeSlice(c.beginParse()).endCell();
const twoSig = (op, c) =>
  beginCell().storeUint(op, 32)
    .storeRef(beginCell().storeBuffer(signCell(c, kA)).endCell())
    .storeRef(beginCell().storeBuffer(signCell(c, kB)).endCell())
    .storeSlice(c.beginParse()).endCell();

const out = { keys: {}, cells: {} };
out.keys = {
  seed_a: seedA.toString('hex'), seed_b: seedB.toString('hex'),
  pub_a: kA.publicKey.toString('hex'), pub_b: kB.publicKey.toString('hex'),
  channel_id: CHANNEL_ID.toString(16),
};
const put = (name, cell, extra = {}) => { out.cells[name] = { hash: cell.hash().toString('hex'), boc: hex(cell), ...extra }; };

// Semi-channel states: A pays 1.23456789 TON at seqno 5; B's own state refers to A's body.
const stA = semiState(5, 1234567890n, null);
const stB = semiState(2, 0n, [5, 1234567890n]);
put('state_a', stA, { signature: signCell(stA, kA).toString('hex') });
put('state_b', stB, { signature: signCell(stB, kB).toString('hex') });
const schA = signed(stA, kA), schB = signed(stB, kB);
put('signed_state_a', schA);
put('signed_state_b', schB);
// Largest on-chain-safe seqno and a large amount (edge of the encodings).
const stEdge = semiState(0xfffffffen, (1n << 119n) + 12345n, [0xfffffffen, 1n]);
put('state_edge', stEdge, { signature: signCell(stEdge, kA).toString('hex') });

// Signed bodies and full messages.
const init = beginCell().storeUint(TAG.init, 32).storeUint(CHANNEL_ID, 128)
  .storeCoins(3000000000n).storeCoins(500000000n).endCell();
put('init_body', init);
put('msg_init', oneSig(OP.init, true, kA, init));
const close = beginCell().storeUint(TAG.coop_close, 32).storeUint(CHANNEL_ID, 128)
  .storeCoins(1765432110n).storeCoins(1734567890n).storeUint(6, 64).storeUint(3, 64).endCell();
put('close_body', close);
put('msg_cooperative_close', twoSig(OP.coop_close, close));
const commit = beginCell().storeUint(TAG.coop_commit, 32).storeUint(CHANNEL_ID, 128)
  .storeUint(5, 64).storeUint(2, 64).endCell();
put('commit_body', commit);
put('msg_cooperative_commit', twoSig(OP.coop_commit, commit));
const uncoop = (tag) => beginCell().storeUint(tag, 32).storeUint(CHANNEL_ID, 128)
  .storeRef(schA).storeRef(schB).endCell();
put('start_close_body', uncoop(TAG.start_uncoop));
put('msg_start_uncooperative_close', oneSig(OP.start_uncoop, false, kB, uncoop(TAG.start_uncoop)));
put('challenge_body', uncoop(TAG.challenge));
put('msg_challenge', oneSig(OP.challenge, true, kA, uncoop(TAG.challenge)));
const settle = beginCell().storeUint(TAG.settle, 32).storeUint(CHANNEL_ID, 128).storeBit(0).endCell();
put('settle_body', settle);
put('msg_settle', oneSig(OP.settle, true, kA, settle));
put('msg_finish', beginCell().storeUint(OP.finish, 32).endCell());
put('msg_top_up', beginCell().storeUint(OP.top_up, 32).storeCoins(3000000000n).storeCoins(0n).endCell());

// Storage as tonweb's createDataCell writes it, and a quarantined state.
const addrA = new Address(0, Buffer.alloc(32, 0xaa));
const addrB = new Address(0, Buffer.alloc(32, 0xbb));
const closing = beginCell().storeUint(3600, 32).storeCoins(100000000n).storeUint(1800, 32).endCell();
const payment = beginCell().storeCoins(10000000n).storeAddress(addrA).storeAddress(addrB).endCell();
const storage = beginCell().storeBit(0).storeCoins(0).storeCoins(0)
  .storeBuffer(kA.publicKey).storeBuffer(kB.publicKey).storeUint(CHANNEL_ID, 128)
  .storeRef(closing).storeUint(0, 32).storeUint(0, 32).storeBit(0).storeRef(payment).endCell();
put('storage_initial', storage);
const quarantine = (withChallenged) => {
  const b = beginCell().storeSlice(body(5, 1234567890n).beginParse())
    .storeSlice(body(2, 0n).beginParse()).storeUint(1700000000, 32).storeBit(0);
  if (withChallenged) b.storeBit(1);
  return b.endCell();
};
put('quarantine_challenged', quarantine(true));
put('quarantine_settled', quarantine(false));
const storageQ = beginCell().storeBit(1).storeCoins(3000000000n).storeCoins(500000000n)
  .storeBuffer(kA.publicKey).storeBuffer(kB.publicKey).storeUint(CHANNEL_ID, 128)
  .storeRef(closing).storeUint(1, 32).storeUint(0, 32).storeBit(1).storeRef(quarantine(true))
  .storeRef(payment).endCell();
put('storage_quarantined', storageQ);

process.stdout.write(JSON.stringify(out, null, 2) + '\n');
