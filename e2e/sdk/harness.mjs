// Shared harness of the SDK flows: configuration from the environment, one "ok" line per passed
// step, and exit code 1 with a "FAIL" line on the first mismatch. A field or route the SDK expects
// beyond what the flow itself needs is a "GAP": reported where found, and the run fails at its end.
// Each flow script stays a plain list of SDK calls.

import { randomBytes } from "node:crypto";
import { inspect } from "node:util";

/** config reads the cluster's address and API key, the only inputs of a flow. */
export function config() {
    const baseUrl = (process.env.CAIRN_URL || "").replace(/\/+$/, "");
    const apiKey = process.env.CAIRN_API_KEY || "";
    if (!baseUrl || !apiKey) {
        die("set CAIRN_URL (e.g. http://127.0.0.1:8081) and CAIRN_API_KEY (e.g. the root key cairn dev prints)");
    }
    // A run id keeps names and tags of this run apart from earlier runs against the same cluster.
    return { baseUrl, apiKey, run: randomBytes(6).toString("hex") };
}

let passed = 0;
let current = "";
const gaps = [];

/** step runs one named step; its first failed check ends the process with exit code 1. */
export async function step(name, fn) {
    current = name;
    const start = process.hrtime.bigint();
    try {
        await fn();
    } catch (err) {
        die(`step "${name}" failed:\n${describe(err)}`);
    }
    const ms = Number(process.hrtime.bigint() - start) / 1e6;
    passed++;
    console.log(`ok   ${String(passed).padStart(2)}  ${name}  (${ms.toFixed(0)} ms)`);
}

/**
 * gap records an incompatibility that does not stop the flow: a field the SDK's types promise but
 * the answer lacks, say. The step goes on, so the later steps still run, and done fails the run.
 */
export function gap(cond, what, got) {
    if (cond) return;
    if (gaps.some((g) => g.what === what)) return; // one report per kind, not one per token
    const msg = got === undefined ? what : `${what}; got ${show(got)}`;
    gaps.push({ what, line: `[${current}] ${what}` });
    console.log(`GAP      ${msg}`);
}

/** done prints the summary; recorded gaps make the run fail after all steps have had their say. */
export function done(flow) {
    if (gaps.length > 0) {
        die(`${flow}: ${passed} steps ran, ${gaps.length} incompatibilities (evidence in the GAP lines above):\n${gaps.map((g) => `  - ${g.line}`).join("\n")}`);
    }
    console.log(`PASS ${flow}: ${passed} steps`);
}

/** Mismatch is a failed expectation, as opposed to an error thrown by the SDK or the network. */
export class Mismatch extends Error {}

/** check fails the current step unless cond holds. */
export function check(cond, what, got) {
    if (!cond) {
        throw new Mismatch(got === undefined ? what : `${what}; got ${show(got)}`);
    }
}

/** equal fails the current step unless got and want are deeply equal. */
export function equal(got, want, what) {
    if (!deepEqual(got, want)) {
        throw new Mismatch(`${what}:\n  want ${show(want)}\n  got  ${show(got)}`);
    }
}

/** bytesEqual compares downloaded content with what was uploaded, without dumping megabytes. */
export function bytesEqual(got, want, what) {
    check(Buffer.isBuffer(got) || got instanceof ArrayBuffer || ArrayBuffer.isView(got),
        `${what}: want bytes (Buffer/ArrayBuffer)`, typeof got);
    const g = Buffer.from(got);
    if (!g.equals(want)) {
        let i = 0;
        while (i < g.length && i < want.length && g[i] === want[i]) i++;
        throw new Mismatch(`${what}: ${g.length} bytes differ from the ${want.length} uploaded, first difference at byte ${i}`);
    }
}

/**
 * rejects runs fn, which must throw; it returns the error so the caller can check its class and
 * fields.
 */
export async function rejects(fn, what) {
    try {
        await fn();
    } catch (err) {
        if (err instanceof Mismatch) throw err;
        return err;
    }
    throw new Mismatch(`${what}: the call succeeded, want an error`);
}

/** isoMillis matches a UTC timestamp with exactly three fractional digits. */
export const isoMillis = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

/** content returns n bytes that are not all alike, so an offset error cannot go unnoticed. */
export function content(n) {
    return randomBytes(n);
}

function die(msg) {
    console.error(`FAIL ${msg}`);
    process.exit(1);
}

function describe(err) {
    if (err instanceof Mismatch) return `  mismatch: ${err.message}`;
    // SDK errors carry the HTTP exchange; show it, since it is the evidence of an incompatibility.
    const lines = [`  ${err?.constructor?.name ?? typeof err}: ${err?.message ?? err}`];
    for (const k of ["status", "statusText", "error", "response"]) {
        if (err && err[k] !== undefined) lines.push(`  ${k}: ${show(err[k])}`);
    }
    if (err?.request?.url) {
        // The key must not reach a CI log: the SDK's own header cleaning leaves bearer keys whole.
        const { Authorization, "X-API-KEY": _, ...headers } = err.request.headers ?? {};
        lines.push(`  request: ${err.request.method?.toUpperCase()} ${err.request.url} ${show(headers)}`);
    }
    if (err?.response === undefined && err?.stack) lines.push(err.stack);
    return lines.join("\n");
}

function show(v) {
    return inspect(v, { depth: 4, breakLength: 120, maxArrayLength: 20, maxStringLength: 300 });
}

function deepEqual(a, b) {
    if (a === b) return true;
    if (a instanceof Date && b instanceof Date) return a.getTime() === b.getTime();
    if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
    if (Array.isArray(a) !== Array.isArray(b)) return false;
    const ka = Object.keys(a).filter((k) => a[k] !== undefined).sort();
    const kb = Object.keys(b).filter((k) => b[k] !== undefined).sort();
    return ka.length === kb.length && ka.every((k, i) => k === kb[i] && deepEqual(a[k], b[k]));
}
