// Validates Kubernetes objects against Kubernetes' published OpenAPI schemas, as compiled by
// the npm package kubernetes-models (and @kubernetes-models/prometheus-operator for
// ServiceMonitor): each object is built as its model class and validated.
//
//   node validate.mjs < objects.json     (a JSON array, e.g. `helmrender --output json`)
//
// Prints one line per object ("ok Kind/name" or "invalid Kind/name: <errors>") and exits 1 if
// any object is invalid or of a kind it does not know.
import { readFileSync } from "node:fs";
import * as core from "kubernetes-models/v1";
import * as apps from "kubernetes-models/apps/v1";
import * as monitoring from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const groups = { "v1": core, "apps/v1": apps, "monitoring.coreos.com/v1": monitoring };
const objects = JSON.parse(readFileSync(0, "utf8"));
let bad = 0;
for (const obj of objects) {
  const id = `${obj.kind}/${obj.metadata?.name}`;
  const model = groups[obj.apiVersion]?.[obj.kind];
  if (typeof model !== "function") {
    console.log(`invalid ${id}: unknown apiVersion/kind ${obj.apiVersion} ${obj.kind}`);
    bad++;
    continue;
  }
  try {
    new model(obj).validate();
    console.log(`ok ${id}`);
  } catch (e) {
    console.log(`invalid ${id}: ${e.message}`);
    bad++;
  }
}
process.exit(bad === 0 ? 0 : 1);
