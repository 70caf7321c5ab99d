// The Worker in the real Workers runtime (workerd, through miniflare), in front of a real
// originshield. Run by tests/test_worker.py, which starts originshield and writes the fixture
// file named by WORKER_FIXTURE: { origin, secret, ttl, lock: {header, value}, vectors, fresh }.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { Miniflare } from "miniflare";

const fixture = JSON.parse(readFileSync(process.env.WORKER_FIXTURE, "utf8"));
const vectors = fixture.vectors;
const HOST = "http://img.test";
let mf;

async function originRequests() {
  const text = await (await fetch(fixture.origin + "/metrics")).text();
  return text
    .split("\n")
    .filter((l) => l.startsWith('originshield_requests_total{route="image"'))
    .reduce((sum, l) => sum + Number(l.split(" ").pop()), 0);
}

before(async () => {
  mf = new Miniflare({
    modules: true,
    scriptPath: fileURLToPath(new URL("../worker.js", import.meta.url)),
    compatibilityDate: "2026-08-01",
    bindings: {
      SIGNING_KEYS: `${fixture.secret},another-key-for-rotation-0123456789`,
      TOKEN_TTL: String(fixture.ttl),
      ORIGIN_URL: fixture.origin,
      ORIGIN_AUTH_HEADER: fixture.lock.header,
      ORIGIN_AUTH_VALUE: fixture.lock.value,
    },
  });
  await mf.ready;
});

after(async () => {
  await mf.dispose();
});

test("shared vectors: every permanent URL reaches the origin and is served", async () => {
  for (const v of vectors.permanent) {
    const res = await mf.dispatchFetch(HOST + v.url);
    assert.equal(res.status, 200, v.url);
    assert.match(res.headers.get("Content-Type"), /^image\//);
    await res.arrayBuffer();
  }
});

test("shared vectors: forged URLs are refused at the edge, the origin never sees them", async () => {
  const before = await originRequests();
  for (const url of vectors.forged) {
    const res = await mf.dispatchFetch(HOST + url);
    assert.equal(res.status, 403, url);
    assert.equal(res.headers.get("Cache-Control"), "no-store");
    await res.text();
  }
  assert.equal(await originRequests(), before);
});

test("shared vectors: the WAF algorithm in the Worker matches the documented one", async () => {
  const { verify } = await import("../worker.js");
  for (const v of vectors.waf) {
    for (const mac of [encodeURIComponent(v.mac), v.mac_urlsafe].filter(Boolean)) {
      const r = await verify(`${v.message}?verify=${v.ts}-${mac}`, [v.secret], 60, v.ts + 1);
      assert.equal(r.ok, true, mac);
    }
    const bad = await verify(`${v.message}x?verify=${v.ts}-${encodeURIComponent(v.mac)}`, [v.secret], 60, v.ts + 1);
    assert.equal(bad.ok, false);
  }
  for (const t of vectors.timed) {
    assert.equal((await verify(t.url, [vectors.secret], vectors.ttl, t.issued_at + 10)).ok, true);
    assert.equal((await verify(t.url, [vectors.secret], vectors.ttl, t.issued_at + vectors.ttl)).ok, false);
  }
});

test("forgeries: token not last, twice, renamed, a space for a plus", async () => {
  const good = fixture.fresh.timed_a;
  const [base, token] = good.split("&verify=");
  const forged = [
    `${base}&verify=${token}&w=1`,
    `${base}&verify=${token}&verify=${token}`,
    `${base}&Verify=${token}`,
    `${base}&verify=${token.replace("%2B", "%20")}${token.includes("%2B") ? "" : "%20"}`,
    `${base}&verify=${Number(token.slice(0, 10)) + 1}${token.slice(10)}`,
  ];
  for (const url of forged) {
    const res = await mf.dispatchFetch(HOST + url);
    assert.equal(res.status, 403, url);
    await res.text();
  }
  const expired = await mf.dispatchFetch(HOST + fixture.fresh.expired);
  assert.equal(expired.status, 403);
  assert.equal((await expired.text()).trim(), "token expired");
});

test("timed URLs: one cached copy for every token of an image, never past the token", async () => {
  const first = await mf.dispatchFetch(HOST + fixture.fresh.timed_a);
  assert.equal(first.status, 200);
  assert.equal(first.headers.get("X-Edge-Cache"), "MISS");
  const body = new Uint8Array(await first.arrayBuffer());
  const firstAge = Number(/max-age=(\d+)/.exec(first.headers.get("Cache-Control"))[1]);
  assert.ok(firstAge <= fixture.fresh.timed_a_remaining, `${firstAge}`);
  const before = await originRequests();
  const second = await mf.dispatchFetch(HOST + fixture.fresh.timed_b);  // another token
  assert.equal(second.status, 200);
  assert.equal(second.headers.get("X-Edge-Cache"), "HIT");
  assert.deepEqual(new Uint8Array(await second.arrayBuffer()), body);
  const secondAge = Number(/max-age=(\d+)/.exec(second.headers.get("Cache-Control"))[1]);
  assert.ok(secondAge <= fixture.fresh.timed_b_remaining, `${secondAge}`);
  assert.equal(await originRequests(), before);
});

test("f=auto: Accept is normalised to a class, and classes are cached apart", async () => {
  const chrome = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8";
  const old = "image/png,image/*;q=0.8,*/*;q=0.5";
  const a = await mf.dispatchFetch(HOST + fixture.fresh.auto, { headers: { Accept: chrome } });
  assert.equal(a.headers.get("Content-Type"), "image/avif");
  await a.arrayBuffer();
  const b = await mf.dispatchFetch(HOST + fixture.fresh.auto, { headers: { Accept: old } });
  assert.equal(b.headers.get("Content-Type"), "image/jpeg");
  await b.arrayBuffer();
  const c = await mf.dispatchFetch(HOST + fixture.fresh.auto, { headers: { Accept: "image/avif,*/*" } });
  assert.equal(c.headers.get("Content-Type"), "image/avif");
  assert.equal(c.headers.get("X-Edge-Cache"), "HIT");
  await c.arrayBuffer();
});

test("origin lock: the Worker adds the header; the origin refuses requests without it", async () => {
  const direct = await fetch(fixture.origin + vectors.permanent[0].url);
  assert.equal(direct.status, 403);
  await direct.text();
  const viaEdge = await mf.dispatchFetch(HOST + vectors.permanent[0].url);
  assert.equal(viaEdge.status, 200);
  await viaEdge.arrayBuffer();
});

test("methods other than GET and HEAD are refused", async () => {
  const res = await mf.dispatchFetch(HOST + vectors.permanent[0].url, { method: "POST", body: "x" });
  assert.equal(res.status, 405);
  await res.text();
});
