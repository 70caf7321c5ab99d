// originshield at the edge: verify signed image URLs before they reach the origin, cache timed
// (verify=) URLs once for every token that names the same image, and lock the origin.
//
// Bindings (wrangler.toml): SIGNING_KEYS (secret, comma-separated, all verify), TOKEN_TTL,
// ORIGIN_URL, ORIGIN_AUTH_HEADER, ORIGIN_AUTH_VALUE (secret).
// The token rules are those of originshield (proxy/signing.py); tests/vectors/signing.json keeps
// the two in step.

const TOKEN_NAMES = ["s", "verify"];
const MAX_SKEW = 60;
const encoder = new TextEncoder();
const keyCache = new Map();

function text(status, body, extra = {}) {
  return new Response(body + "\n", {
    status,
    headers: { "Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store", ...extra },
  });
}

function decodeName(raw) {
  try {
    return decodeURIComponent(raw).trim().toLowerCase();
  } catch {
    return raw.toLowerCase();
  }
}

// Path and query exactly as sent: the token covers these bytes.
export function rawTarget(requestUrl) {
  const afterScheme = requestUrl.indexOf("//") + 2;
  const slash = requestUrl.indexOf("/", afterScheme);
  return slash === -1 ? "/" : requestUrl.slice(slash);
}

// { path, message, name, value } or { error }
export function splitTarget(target) {
  const q = target.indexOf("?");
  if (q === -1) return { path: target, message: target, name: null, value: null };
  const params = target.slice(q + 1).split("&");
  const last = params[params.length - 1];
  const eq = last.indexOf("=");
  const lastName = eq === -1 ? last : last.slice(0, eq);
  const tokenName = eq !== -1 && TOKEN_NAMES.includes(lastName) ? lastName : null;
  const body = tokenName ? params.slice(0, -1) : params;
  for (const item of body) {
    if (TOKEN_NAMES.includes(decodeName(item.split("=")[0]))) {
      return { error: "token must be the last parameter and appear once" };
    }
  }
  if (!tokenName) {
    if (TOKEN_NAMES.includes(decodeName(lastName))) return { error: "malformed token parameter" };
    return { path: target.slice(0, q), message: target, name: null, value: null };
  }
  const value = last.slice(eq + 1);
  const message = target.slice(0, target.length - value.length - tokenName.length - 2);
  return { path: target.slice(0, q), message, name: tokenName, value };
}

async function hmacKey(secret) {
  let key = keyCache.get(secret);
  if (!key) {
    key = await crypto.subtle.importKey(
      "raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"],
    );
    keyCache.set(secret, key);
  }
  return key;
}

async function mac(secret, message) {
  const key = await hmacKey(secret);
  return new Uint8Array(await crypto.subtle.sign("HMAC", key, encoder.encode(message)));
}

function equalBytes(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

function b64encode(bytes) {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

function b64urlNoPad(bytes) {
  return b64encode(bytes).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

// Only %XX escapes are decoded: "+" stays "+", and a space is never part of a MAC.
function percentDecode(s) {
  if (/%(?![0-9A-Fa-f]{2})/.test(s)) return null;
  return s.replace(/%([0-9A-Fa-f]{2})/g, (_, h) => String.fromCharCode(parseInt(h, 16)));
}

// The 32 MAC bytes from either WAF encoding (standard padded, or url-safe unpadded), canonical only.
export function decodeMac(textMac) {
  const raw = percentDecode(textMac);
  if (raw === null) return null;
  let std;
  if (raw.length === 44 && /^[A-Za-z0-9+/]{43}=$/.test(raw)) std = raw;
  else if (raw.length === 43 && /^[A-Za-z0-9_-]{43}$/.test(raw)) std = raw.replace(/-/g, "+").replace(/_/g, "/") + "=";
  else return null;
  let bin;
  try {
    bin = atob(std);
  } catch {
    return null;
  }
  const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
  if (bytes.length !== 32 || b64encode(bytes) !== std) return null;
  return bytes;
}

// { ok: true, kind, message, expiresAt } or { ok: false, reason }
export async function verify(target, keys, ttl, now) {
  const split = splitTarget(target);
  if (split.error) return { ok: false, reason: split.error };
  if (!split.name) return { ok: false, reason: "missing signature" };
  if (split.name === "s") {
    let ok = false;
    for (const k of keys) {
      ok = equalBytes(encoder.encode(b64urlNoPad(await mac(k, split.message))), encoder.encode(split.value)) || ok;
    }
    return ok ? { ok: true, kind: "permanent", message: split.message, expiresAt: null } : { ok: false, reason: "invalid signature" };
  }
  const dash = split.value.indexOf("-");
  const ts = dash === -1 ? "" : split.value.slice(0, dash);
  if (!/^[0-9]{10}$/.test(ts)) return { ok: false, reason: "malformed verify token" };
  const candidate = decodeMac(split.value.slice(dash + 1));
  if (!candidate) return { ok: false, reason: "malformed verify token" };
  let ok = false;
  for (const k of keys) ok = equalBytes(await mac(k, split.message + ts), candidate) || ok;
  if (!ok) return { ok: false, reason: "invalid signature" };
  const issued = Number(ts);
  if (issued > now + MAX_SKEW) return { ok: false, reason: "token issued in the future" };
  const expiresAt = issued + ttl;
  if (now >= expiresAt) return { ok: false, reason: "token expired" };
  return { ok: true, kind: "timed", message: split.message, expiresAt };
}

export function acceptClass(accept) {
  const accepts = (mime) =>
    (accept || "").split(",").some((item) => {
      const [media, ...params] = item.trim().split(";");
      if (media.trim().toLowerCase() !== mime) return false;
      const q = params.map((p) => p.trim()).find((p) => p.startsWith("q="));
      return q === undefined || Number(q.slice(2)) > 0;
    });
  if (accepts("image/avif")) return "avif";
  if (accepts("image/webp")) return "webp";
  return "other";
}

const NORMALISED_ACCEPT = {
  avif: "image/avif,image/webp,image/*;q=0.8",
  webp: "image/webp,image/*;q=0.8",
  other: "image/jpeg,image/png,image/*;q=0.8",
};

function maxAge(value) {
  const m = /(?:^|[\s,])max-age=(\d+)/.exec(value || "");
  return m ? Number(m[1]) : null;
}

function isAuto(message) {
  const q = message.indexOf("?");
  return q !== -1 && message.slice(q + 1).split("&").includes("f=auto");
}

export default {
  async fetch(request, env, ctx) {
    if (request.method !== "GET" && request.method !== "HEAD") {
      return text(405, "method not allowed", { Allow: "GET, HEAD" });
    }
    const keys = String(env.SIGNING_KEYS || "").split(",").map((k) => k.trim()).filter(Boolean);
    if (keys.length === 0) return text(500, "edge misconfigured");
    const ttl = Number(env.TOKEN_TTL || 3600);
    const now = Math.floor(Date.now() / 1000);
    const target = rawTarget(request.url);
    const result = await verify(target, keys, ttl, now);
    if (!result.ok) return text(403, result.reason);

    const headers = new Headers(request.headers);
    const auto = isAuto(result.message);
    const cls = auto ? acceptClass(request.headers.get("Accept")) : null;
    if (cls) headers.set("Accept", NORMALISED_ACCEPT[cls]);
    if (env.ORIGIN_AUTH_HEADER && env.ORIGIN_AUTH_VALUE) {
      headers.set(env.ORIGIN_AUTH_HEADER, env.ORIGIN_AUTH_VALUE);
    }
    const originUrl = String(env.ORIGIN_URL).replace(/\/$/, "") + target;
    const forward = () => fetch(originUrl, { method: request.method, headers, redirect: "manual" });

    if (result.kind !== "timed") return forward();

    // Every token for the same image shares one cached copy: the key is the URL without it.
    const origin = new URL(request.url).origin;
    const sep = result.message.includes("?") ? "&" : "?";
    const cacheKey = new Request(origin + result.message + (cls ? `${sep}__accept=${cls}` : ""));
    const remaining = result.expiresAt - now;
    const cache = caches.default;
    const cached = request.method === "GET" ? await cache.match(cacheKey) : undefined;
    if (cached) {
      const out = new Response(cached.body, cached);
      out.headers.set("Cache-Control", `public, max-age=${Math.min(remaining, maxAge(cached.headers.get("Cache-Control")) ?? remaining)}`);
      out.headers.set("X-Edge-Cache", "HIT");
      return out;
    }
    const response = await forward();
    if (response.status !== 200) return response;
    // Never kept longer than the token that brought it lives.
    const life = Math.min(remaining, maxAge(response.headers.get("Cache-Control")) ?? remaining);
    const out = new Response(response.body, response);
    out.headers.set("Cache-Control", `public, max-age=${life}`);
    out.headers.set("X-Edge-Cache", "MISS");
    if (request.method === "GET" && life > 0) {
      const stored = out.clone();
      stored.headers.delete("Set-Cookie");
      ctx.waitUntil(cache.put(cacheKey, stored));
    }
    return out;
  },
};
