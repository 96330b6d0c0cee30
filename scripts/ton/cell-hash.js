// Print the representation hash (hex) of the single root cell of a BoC given as hex in a file.
const fs = require('fs');
const { Cell } = require('@ton/core');
const hex = fs.readFileSync(process.argv[2], 'utf8').trim();
process.stdout.write(Cell.fromBoc(Buffer.from(hex, 'hex'))[0].hash().toString('hex') + '\n');
