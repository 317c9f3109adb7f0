// JS SDK smoke test: create, run, write, read, delete through `langsmith/sandbox`.
//
// Usage: node smoke.mjs <package-dir>
//   <package-dir> holds the node_modules to load langsmith from: js/ws (with the optional
//   `ws` package, so run() uses the exec WebSocket) or js/http (without it, so a blocking
//   run() uses POST /execute). Configuration comes from LANGSMITH_ENDPOINT/LANGSMITH_API_KEY.
// Prints one JSON object with what it observed; the pytest side asserts on it.
import path from "node:path";
import { pathToFileURL } from "node:url";

const pkgDir = path.resolve(process.argv[2]);
const sdk = await import(
  pathToFileURL(path.join(pkgDir, "node_modules", "langsmith", "sandbox.mjs")).href
);
const { SandboxClient, LangSmithResourceNotFoundError, LangSmithSandboxError } = sdk;

// Record every HTTP request the SDK makes, to tell which exec transport it used.
const requests = [];
const realFetch = globalThis.fetch;
globalThis.fetch = (url, init = {}) => {
  requests.push(`${(init.method ?? "GET").toUpperCase()} ${String(url)}`);
  return realFetch(url, init);
};

const out = { errors: [] };
const client = new SandboxClient();
const name = `js-smoke-${Math.random().toString(16).slice(2, 12)}`;
const sandbox = await client.createSandbox({ name });
try {
  out.name = sandbox.name;
  out.status = sandbox.status;

  const r1 = await sandbox.run("echo 'Hello, World!'");
  out.run = [r1.stdout, r1.stderr, r1.exit_code];
  const r2 = await sandbox.run("echo out; echo err >&2; exit 3");
  out.run2 = [r2.stdout, r2.stderr, r2.exit_code];
  const r3 = await sandbox.run("python3 -c \"import sys; sys.stdout.write('é€😀' * 20000)\"");
  out.utf8_ok = r3.stdout === "é€😀".repeat(20000);

  await sandbox.write("/tmp/js/hello.txt", "hello from js");
  out.read_text = new TextDecoder().decode(await sandbox.read("/tmp/js/hello.txt"));
  const bytes = new Uint8Array(256 * 64);
  for (let i = 0; i < bytes.length; i++) bytes[i] = i % 256;
  await sandbox.write("/tmp/js/all.bin", bytes);
  const back = await sandbox.read("/tmp/js/all.bin");
  out.binary_ok = back.length === bytes.length && back.every((b, i) => b === bytes[i]);
  out.sha_in_sandbox = (await sandbox.run("sha256sum /tmp/js/all.bin")).stdout.split(" ")[0];
  try {
    await sandbox.read("/tmp/js/missing.txt");
    out.missing = "no error";
  } catch (e) {
    out.missing = e instanceof LangSmithResourceNotFoundError ? "ResourceNotFound" : String(e);
  }

  const dataplane = sandbox.dataplane_url;
  out.http_execute_posts = requests.filter((r) => r === `POST ${dataplane}/execute`).length;

  // Streaming needs the WebSocket: only in the ws package dir.
  if (pkgDir.endsWith(`${path.sep}ws`)) {
    const handle = await sandbox.run("for i in 1 2 3; do echo $i; sleep 0.2; done; echo e >&2", {
      wait: false,
    });
    out.command_id = handle.commandId;
    const chunks = [];
    for await (const c of handle) chunks.push([c.stream, c.data, c.offset]);
    const res = await handle.result;
    out.stream = [res.stdout, res.stderr, res.exit_code];
    out.stdout_chunks = chunks.filter((c) => c[0] === "stdout").map((c) => [c[1], c[2]]);
    const seen = [];
    const cb = await sandbox.run("echo cb", { onStdout: (d) => seen.push(d) });
    out.callbacks = [seen.join(""), cb.stdout];
    const again = await sandbox.reconnect(handle.commandId);
    out.reconnect = (await again.result).stdout;
  }
} catch (e) {
  out.errors.push(e instanceof LangSmithSandboxError ? `${e.name}: ${e.message}` : String(e?.stack ?? e));
} finally {
  await sandbox.delete();
}
try {
  await client.getSandbox(name);
  out.after_delete = "still there";
} catch (e) {
  out.after_delete = e instanceof LangSmithResourceNotFoundError ? "ResourceNotFound" : String(e);
}
console.log(JSON.stringify(out));
