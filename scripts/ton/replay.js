// scripts/ton/replay.js: replay the message BoCs the embedded TVM (cocoon-ton)
// ran, in order and at the same chain times, through TON's own emulator (@ton/sandbox,
// same default network config), and compare exit codes, gas and balances.
//   COCOON_TON_TRANSCRIPTS=/tmp/tr cargo test -p cocoon-ton --test channel_contract
//   node scripts/ton/replay.js /tmp/tr/*.json
// Exits 1 if any exit code or inclusion differs, except entries the Rust test marked
// `known_divergence`; gas and balance differences are printed.
const fs = require('fs');
const { Blockchain, internal } = require('@ton/sandbox');
const { Address, Cell, external, loadStateInit } = require('@ton/core');

const cell = (hex) => Cell.fromBoc(Buffer.from(hex, 'hex'))[0];

let known = 0;

async function replay(path) {
  const entries = JSON.parse(fs.readFileSync(path, 'utf8'));
  const bc = await Blockchain.create();
  let bad = 0;
  console.log(`\n${path}`);
  console.log('  #  kind  exit(tycho/ton)  gas(tycho/ton)  balances');
  for (const [i, e] of entries.entries()) {
    bc.now = e.now;
    const to = Address.parse(e.dst);
    let included = true, exit = null, gas = 0n;
    try {
      const msg = e.external
        ? external({ to, body: cell(e.body), init: e.init ? loadStateInit(cell(e.init).beginParse()) : undefined })
        : internal({
            from: Address.parse(e.src), to, value: BigInt(e.value), bounce: e.bounce,
            body: cell(e.body), stateInit: e.init ? loadStateInit(cell(e.init).beginParse()) : undefined,
          });
      const res = await bc.sendMessage(msg);
      const cp = res.transactions[0].description.computePhase;
      if (cp.type === 'vm') { exit = cp.exitCode; gas = cp.gasUsed; }
    } catch (err) {
      if (process.env.REPLAY_DEBUG) console.error(err);
      included = false;
      const m = /exit code (-?\d+)/i.exec(String(err && err.message));
      exit = m ? Number(m[1]) : null;
    }
    let balNote = 'same';
    for (const [addr, want] of Object.entries(e.balances)) {
      const got = (await bc.getContract(Address.parse(addr))).balance;
      if (got !== BigInt(want)) {
        balNote = `differ: ${addr.slice(0, 10)}… tycho ${want} ton ${got} (Δ ${BigInt(want) - got})`;
        break;
      }
    }
    const same = included === e.included && exit === e.exit_code;
    if (!same && e.known_divergence) {
      console.log(`     known divergence: ${e.known_divergence}`);
      known++;
    } else if (!same) bad++;
    console.log(`  ${String(i).padStart(2)} ${e.external ? 'ext' : 'int'}  ${String(e.exit_code).padStart(5)}/${String(exit).padEnd(5)} ${same ? '  ' : '!!'} ${String(e.gas_used).padStart(6)}/${String(gas).padEnd(6)}  ${balNote}`);
  }
  return bad;
}

(async () => {
  let bad = 0;
  for (const p of process.argv.slice(2)) bad += await replay(p);
  console.log(bad ? `\n${bad} exit-code mismatches` : `\nall exit codes and inclusions match (${known} known divergences)`);
  process.exit(bad ? 1 : 0);
})();
