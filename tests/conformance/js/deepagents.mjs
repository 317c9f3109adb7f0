// Deep Agents JS's LangSmithSandbox against Warren: create({snapshotId}), execute, write,
// read, captureSnapshot, and a second sandbox booted from the capture. Prints one JSON line.
// Usage: node deepagents.mjs <package dir> <snapshot id>
import path from "node:path";
import { pathToFileURL } from "node:url";

const [pkg, snapshotId] = process.argv.slice(2);
const entry = pathToFileURL(path.join(pkg, "node_modules/deepagents/dist/index.js")).href;
const { LangSmithSandbox } = await import(entry);

const out = {};
const sb = await LangSmithSandbox.create({ snapshotId });
out.id_is_name = typeof sb.id === "string" && sb.id.length > 0;
try {
  const r = await sb.execute("echo hi; echo err >&2; exit 3");
  out.execute = [r.output, r.exitCode];
  const w = await sb.write("/root/notes/todo.txt", "one\ntwo\nthree\n");
  out.write_error = w.error ?? null;
  const rd = await sb.read("/root/notes/todo.txt");
  out.read_error = rd.error ?? null;
  out.read = typeof rd.content === "string" ? rd.content : new TextDecoder().decode(rd.content);
  const up = await sb.uploadFiles([["/root/bin.dat", new Uint8Array([0, 1, 2, 255])]]);
  out.upload_error = up[0].error;
  const down = await sb.downloadFiles(["/root/bin.dat", "/root/missing.txt"]);
  out.download = Array.from(down[0].content ?? []);
  out.missing = down[1].error;
  const snap = await sb.captureSnapshot(`deepagents-js-${Date.now()}`);
  out.snapshot = { status: snap.status, id: snap.id, source: snap.source_sandbox_id ?? null };
} finally {
  await sb.close();
}
out.closed = !sb.isRunning;
const child = await LangSmithSandbox.create({ snapshotId: out.snapshot.id });
try {
  const r = await child.execute("cat /root/notes/todo.txt");
  out.from_capture = [r.output, r.exitCode];
} finally {
  await child.close();
}
console.log(JSON.stringify(out));
