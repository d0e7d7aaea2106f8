#!/usr/bin/env node
// Compile the test contracts in this folder with solcjs (npm `solc`, offline) and write
// compiled.json: { solc, contracts: { Name: { abi, bytecode } } }.
// Run from the repository root: `npm run compile-contracts` (or `node <this file> [--check]`).
// --check compiles and exits 1 if compiled.json differs, without writing it.
"use strict";
const fs = require("fs");
const path = require("path");
const solc = require("solc");

const here = __dirname;
const sources = {};
for (const file of fs.readdirSync(here).filter((f) => f.endsWith(".sol")).sort()) {
  sources[file] = { content: fs.readFileSync(path.join(here, file), "utf8") };
}
const input = {
  language: "Solidity",
  sources,
  settings: {
    optimizer: { enabled: true, runs: 200 },
    evmVersion: "paris", // no PUSH0: runs on any EVM chain and any anvil hardfork
    metadata: { bytecodeHash: "none" }, // reproducible bytes across machines and paths
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } },
  },
};
const output = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (output.errors || []).filter((e) => e.severity === "error");
for (const e of output.errors || []) process.stderr.write(e.formattedMessage + "\n");
if (errors.length) process.exit(1);

const contracts = {};
for (const file of Object.keys(output.contracts).sort()) {
  for (const name of Object.keys(output.contracts[file]).sort()) {
    const c = output.contracts[file][name];
    if (!c.evm.bytecode.object) continue; // interfaces
    contracts[name] = { abi: c.abi, bytecode: "0x" + c.evm.bytecode.object };
  }
}
const text = JSON.stringify({ solc: solc.version(), contracts }, null, 1) + "\n";
const target = path.join(here, "compiled.json");
if (process.argv.includes("--check")) {
  const current = fs.existsSync(target) ? fs.readFileSync(target, "utf8") : "";
  if (current !== text) {
    process.stderr.write("compiled.json is stale: run `npm run compile-contracts`\n");
    process.exit(1);
  }
  process.exit(0);
}
fs.writeFileSync(target, text);
process.stdout.write(`wrote ${target}: ${Object.keys(contracts).join(", ")}\n`);
