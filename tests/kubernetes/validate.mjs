// validate.mjs: check Kubernetes manifests against the Kubernetes API schemas
// (the kubernetes-models package's JSON schemas, checked with ajv).
//   node validate.mjs FILE.yaml...
// Every document of every file must be a known apiVersion/kind and valid;
// one line per document, exit 1 when any is not.
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";

// apiVersion -> the kubernetes-models module ("v1", "apps/v1", ...)
async function modelClass(apiVersion, kind) {
  if (typeof apiVersion !== "string" || !/^[a-z0-9.]+(\/v[0-9a-z]+)?$/.test(apiVersion))
    throw new Error(`apiVersion ${JSON.stringify(apiVersion)}: not a Kubernetes API version`);
  let mod;
  try {
    mod = await import(`kubernetes-models/${apiVersion}`);
  } catch {
    throw new Error(`apiVersion ${apiVersion}: unknown to kubernetes-models`);
  }
  if (typeof kind !== "string" || typeof mod[kind] !== "function")
    throw new Error(`kind ${JSON.stringify(kind)}: not in ${apiVersion}`);
  return mod[kind];
}

let failed = 0, checked = 0;
for (const file of process.argv.slice(2)) {
  const docs = parseAllDocuments(readFileSync(file, "utf8"));
  for (const [i, doc] of docs.entries()) {
    const where = `${file}#${i + 1}`;
    try {
      if (doc.errors.length) throw new Error(`YAML: ${doc.errors[0].message}`);
      const obj = doc.toJS();
      if (obj === null) continue;
      const Model = await modelClass(obj.apiVersion, obj.kind);
      new Model(obj).validate();
      checked++;
      console.log(`ok ${where} ${obj.kind} ${obj.metadata?.name ?? ""}`);
    } catch (e) {
      failed++;
      console.log(`invalid ${where}: ${String(e.message).split("\n").slice(0, 4).join("; ")}`);
    }
  }
}
console.log(`${checked} valid, ${failed} invalid`);
process.exit(failed || checked === 0 ? 1 : 0);
