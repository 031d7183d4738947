// Validate a glTF/GLB file with the Khronos glTF-Validator and print its JSON report on stdout.
//
//     node tests/tools/validate_gltf.mjs FILE.glb
//
// The validator is web-client's npm devDependency (run `npm ci` in web-client). Exit status: 0 when a report
// was produced (read its issues.numErrors), 2 when the validator could not run on the input.
import { readFileSync } from "node:fs";
import { basename } from "node:path";
import { createRequire } from "node:module";

const require = createRequire(new URL("../../web-client/package.json", import.meta.url));
const validator = require("gltf-validator");

const file = process.argv[2];
if (!file) {
  console.error("usage: node validate_gltf.mjs FILE.glb");
  process.exit(2);
}

try {
  const report = await validator.validateBytes(new Uint8Array(readFileSync(file)), {
    uri: basename(file),
    maxIssues: 1000,
  });
  process.stdout.write(JSON.stringify(report, null, 2) + "\n");
} catch (error) {
  console.error(`glTF-Validator could not validate ${file}: ${error}`);
  process.exit(2);
}
