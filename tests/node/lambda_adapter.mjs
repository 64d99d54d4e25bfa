// Runs kliv's Lambda adapter under Node: `node lambda_adapter.mjs <unpacked package> <event.json>...`
// prints one JSON result per event (what Lambda would return to API Gateway).
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { join } from "node:path";

const [folder, ...events] = process.argv.slice(2);
const { handler } = await import(pathToFileURL(join(folder, "index.mjs")).href);
for (const file of events) {
  const result = await handler(JSON.parse(readFileSync(file, "utf8")), {});
  process.stdout.write(JSON.stringify(result) + "\n");
}
