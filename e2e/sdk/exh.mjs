// The file and token flows of the official Extra Horizon JavaScript SDK, run unchanged against a
// cairn node's /files/v1. Usage: CAIRN_URL=http://127.0.0.1:8081 CAIRN_API_KEY=… node exh.mjs
//
// The SDK's proxy client is the one meant for a host that does its own authentication: it sends
// every request to `host` without any OAuth, and the static headers given at creation ride along.
// A server-side application hands it the API key as a bearer header, which cairn accepts.

import {
    ApiError,
    FileTooLargeError,
    InvalidRqlError,
    InvalidTokenError,
    TokenNotDeleteableError,
    UnauthorizedTokenError,
    UserNotAuthenticatedError,
    createProxyClient,
    rqlBuilder,
} from "@extrahorizon/javascript-sdk";
import { bytesEqual, check, config, content, done, equal, gap, rejects, step } from "./harness.mjs";

const { baseUrl, apiKey, run } = config();

// The SDK rewrites any host that does not contain "localhost" to https://apx.<host> (its hosted
// proxy naming). A deployment serves cairn under an https://apx.… name; a local node over plain
// HTTP is reached by the name localhost.
const host = baseUrl.replace("://127.0.0.1", "://localhost");
let exh; // the application's client, with the API key
let anonymous; // the same without a key

const tag = `sdk-e2e-${run}`;
const name = `sdk e2e ${run}.bin`; // the space exercises the SDK's double-encoded RQL values
const data = content(1536 * 1024 + 7); // two erasure blocks, the second partial
const text = `hello from the Extra Horizon SDK, run ${run}\n`;
let file; // FileDetails of the binary upload
let full; // its full token
let read; // a read token made from it

/** errorClass asserts an SDK error's class (chosen by the SDK from the body's code) and status. */
function errorClass(err, cls, status, code) {
    check(err instanceof cls, `want ${cls.name} (code ${code}), got ${err?.constructor?.name}: ${err?.message}`,
        err?.response);
    equal(err.constructor.name, cls.name, "error class name");
    equal(err.status, status, `${cls.name} HTTP status`);
    equal(err.response?.code, code, `${cls.name} body code`);
}

await step("createProxyClient({host, headers: {Authorization: Bearer <key>}})", async () => {
    exh = createProxyClient({ host, headers: { Authorization: `Bearer ${apiKey}` } });
    anonymous = createProxyClient({ host });
    equal(exh.raw.defaults.baseURL, host,
        "the SDK's base URL (use http://localhost:<port> or https://apx.<name>, which it keeps as given)");
});

await step("files.create(name, Buffer, {tags}) uploads multipart and answers FileDetails with one full token", async () => {
    file = await exh.files.create(name, data, { tags: [tag, "binary"] });
    equal(file.name, name, "name");
    equal(file.size, data.length, "size");
    equal(file.mimetype, "application/octet-stream", "mimetype (form-data's guess for .bin)");
    equal(file.tags, [tag, "binary"], "tags");
    check(typeof file.creatorId === "string" && file.creatorId !== "", "creatorId is a non-empty string", file.creatorId);
    // The SDK turns *Timestamp fields into Dates; an unparsable string would become Invalid Date.
    for (const k of ["creationTimestamp", "updateTimestamp"]) {
        check(file[k] instanceof Date && !isNaN(file[k]), `${k} parsed by the SDK into a valid Date`, file[k]);
    }
    check(Array.isArray(file.tokens) && file.tokens.length === 1, "exactly one token", file.tokens);
    equal(file.tokens[0].accessLevel, "full", "token accessLevel");
    full = file.tokens[0].token;
    check(typeof full === "string" && full.length >= 32, "token is an opaque string of 256+ bits", full);
});

await step("files.createFromText(text) uploads a single 'data' part", async () => {
    const t = await exh.files.createFromText(text);
    equal(t.size, Buffer.byteLength(text), "size");
    equal(t.name, "data", "name falls back to the part's filename");
    equal(t.mimetype, "application/octet-stream", "mimetype of the 'data' part");
    const got = await exh.files.retrieve(t.tokens[0].token);
    bytesEqual(got, Buffer.from(text), "createFromText content");
    equal(await exh.files.remove(t.tokens[0].token), { affectedRecords: 1 }, "remove");
});

await step("files.retrieve(full token) returns the uploaded bytes", async () => {
    bytesEqual(await exh.files.retrieve(full), data, "retrieve");
});

await step("files.retrieveStream(full token) streams the uploaded bytes with the file's headers", async () => {
    const res = await exh.files.retrieveStream(full);
    equal(res.headers["content-type"], file.mimetype, "Content-Type is the stored mimetype");
    check(/^attachment/.test(res.headers["content-disposition"] ?? ""), "Content-Disposition: attachment",
        res.headers["content-disposition"]);
    const chunks = [];
    for await (const c of res.data) chunks.push(c);
    bytesEqual(Buffer.concat(chunks), data, "retrieveStream");
});

await step("files.getDetails(full token) matches the upload, tokens included", async () => {
    equal(await exh.files.getDetails(full), file, "details");
});

await step("files.generateToken(full, {accessLevel: 'read'}) answers a read token", async () => {
    const t = await exh.files.generateToken(full, { accessLevel: "read" });
    equal(Object.keys(t).sort(), ["accessLevel", "token"], "token object keys");
    equal(t.accessLevel, "read", "accessLevel");
    check(t.token !== full, "a new token", t.token);
    read = t.token;
});

await step("the read token retrieves the bytes and the details, without tokens", async () => {
    bytesEqual(await exh.files.retrieve(read), data, "retrieve with read token");
    const d = await exh.files.getDetails(read);
    check(!("tokens" in d), "a read token's details have no tokens", d.tokens);
    const { tokens, ...rest } = file;
    equal(d, rest, "details through the read token");
});

await step("getDetails(full) now lists both tokens", async () => {
    const d = await exh.files.getDetails(full);
    equal(d.tokens.map((t) => t.accessLevel).sort(), ["full", "read"], "access levels");
});

await step("generateToken with a read token is UnauthorizedTokenError (2606)", async () => {
    errorClass(await rejects(() => exh.files.generateToken(read, { accessLevel: "read" }), "generateToken(read)"),
        UnauthorizedTokenError, 401, 2606);
});

await step("files.deleteToken(full, read) removes the read token", async () => {
    equal(await exh.files.deleteToken(full, read), undefined, "deleteToken resolves");
    errorClass(await rejects(() => exh.files.getDetails(read), "getDetails(deleted read token)"),
        InvalidTokenError, 400, 2605);
});

await step("deleting the last full token is TokenNotDeleteableError (2607)", async () => {
    errorClass(await rejects(() => exh.files.deleteToken(full, full), "deleteToken(full, full)"),
        TokenNotDeleteableError, 403, 2607);
});

await step("an unknown token is InvalidTokenError (2605) on getDetails, generateToken and remove", async () => {
    const bogus = "0123456789abcdef01234567-00000000-0000-4000-8000-000000000000";
    errorClass(await rejects(() => exh.files.getDetails(bogus), "getDetails"), InvalidTokenError, 400, 2605);
    errorClass(await rejects(() => exh.files.generateToken(bogus, {}), "generateToken"), InvalidTokenError, 400, 2605);
    errorClass(await rejects(() => exh.files.remove(bogus), "remove"), InvalidTokenError, 400, 2605);
});

await step("retrieve with an unknown token is a 400 whose body carries code 2605", async () => {
    // retrieve asks for an arraybuffer, so the SDK cannot read the code and gives a plain ApiError;
    // the same happens against Extra Horizon itself. The wire answer is what must match.
    const err = await rejects(() => exh.files.retrieve("no-such-token"), "retrieve");
    check(err instanceof ApiError, "an ApiError", err);
    equal(err.status, 400, "status");
    const body = JSON.parse(Buffer.from(Object.values(err.response)).toString());
    equal(body.code, 2605, "body code");
    equal(body.name, "INVALID_TOKEN_EXCEPTION", "body name");
});

await step("upload without an API key is UserNotAuthenticatedError (104)", async () => {
    // The SDK builds this one class from the body's name alone and keeps neither status nor body.
    const err = await rejects(() => anonymous.files.create("anon.bin", Buffer.from("x")), "anonymous create");
    check(err instanceof UserNotAuthenticatedError, "want UserNotAuthenticatedError (code 104)", err);
    equal(err.name, "USER_NOT_AUTHENTICATED_EXCEPTION", "error name from the body");
});

await step("an upload over the max file size is FileTooLargeError (2610)", async () => {
    // The SDK streams multipart with chunked encoding, so the limit is enforced while reading.
    const max = Number(process.env.CAIRN_SDK_MAX_FILE_BYTES || 8 << 20);
    errorClass(await rejects(() => exh.files.create(`big-${run}.bin`, Buffer.alloc(max + 1, 7), { tags: [tag] }),
        "create(max+1 bytes)"), FileTooLargeError, 400, 2610);
});

const bulk = 55; // more than one page of the SDK's findAll, which asks for limit(50)
await step(`${bulk} more uploads tagged for the listing`, async () => {
    for (let i = 0; i < bulk; i++) {
        const f = await exh.files.create(`bulk-${run}-${String(i).padStart(2, "0")}.txt`, Buffer.from(`bulk ${i}\n`),
            { tags: [tag, "bulk"] });
        equal(f.mimetype, "text/plain", "mimetype guessed from .txt");
    }
});

await step("files.find({rql: eq(name, …)}) finds the file by a name with a space", async () => {
    const res = await exh.files.find({ rql: rqlBuilder().eq("name", name).build() });
    equal(res.page, { total: 1, offset: 0, limit: 20 }, "page (default limit 20)");
    equal(res.data, [file], "data, full tokens included");
});

await step("files.findFirst and files.findByName", async () => {
    equal(await exh.files.findFirst({ rql: rqlBuilder().eq("tags", tag).eq("tags", "binary").build() }), file,
        "findFirst on two tags");
    equal(await exh.files.findByName(name), file, "findByName");
    equal(await exh.files.findByName(`absent ${run}`), undefined, "findByName of an absent name");
});

await step("files.find pages with limit(n, offset) and sort", async () => {
    const rql = rqlBuilder().eq("tags", "bulk").eq("tags", tag).sort("+name").limit(20, 40).build();
    const res = await exh.files.find({ rql });
    equal(res.page, { total: bulk, offset: 40, limit: 20 }, "page");
    equal(res.data.map((f) => f.name), Array.from({ length: bulk - 40 }, (_, i) =>
        `bulk-${run}-${String(40 + i).padStart(2, "0")}.txt`), "names of the last page, sorted");
});

await step(`files.findAll walks ${bulk + 1} files over two pages`, async () => {
    const all = await exh.files.findAll({ rql: rqlBuilder().eq("tags", tag).build() });
    equal(all.length, bulk + 1, "count");
    equal(new Set(all.map((f) => f.name)).size, bulk + 1, "distinct names (no page overlap)");
    check(all.every((f) => f.tokens?.length >= 1), "every listed file carries its tokens");
});

await step("bad RQL is InvalidRqlError (19)", async () => {
    errorClass(await rejects(() => exh.files.find({ rql: "?eq(name" }), "find(bad rql)"), InvalidRqlError, 400, 19);
});

await step("files.settings.get and files.settings.update", async () => {
    const before = await exh.files.settings.get();
    check(Array.isArray(before.disableForceDownloadForMimeTypes), "disableForceDownloadForMimeTypes is an array", before);
    // FileServiceSettings.updateTimestamp is a required Date in the SDK's types, also before any update.
    gap(before.updateTimestamp instanceof Date && !isNaN(before.updateTimestamp),
        "GET /files/v1/settings: updateTimestamp must be present (SDK type FileServiceSettings.updateTimestamp: Date)",
        before);
    const want = ["image/png", `application/x-${run}`];
    equal(await exh.files.settings.update({ disableForceDownloadForMimeTypes: want }), { affectedRecords: 1 }, "update");
    const after = await exh.files.settings.get();
    equal(after.disableForceDownloadForMimeTypes, want, "settings after update");
    check(after.updateTimestamp instanceof Date && !isNaN(after.updateTimestamp), "updateTimestamp after an update",
        after.updateTimestamp);
    equal(await exh.files.settings.update({ disableForceDownloadForMimeTypes: before.disableForceDownloadForMimeTypes }),
        { affectedRecords: 1 }, "restore");
});

await step("files.remove(full) deletes the file and all its tokens", async () => {
    equal(await exh.files.remove(full), { affectedRecords: 1 }, "remove");
    errorClass(await rejects(() => exh.files.getDetails(full), "getDetails after remove"), InvalidTokenError, 400, 2605);
    equal(await exh.files.findByName(name), undefined, "the listing no longer has it");
});

await step("clean up the bulk files", async () => {
    for (const f of await exh.files.findAll({ rql: rqlBuilder().eq("tags", tag).build() })) {
        equal(await exh.files.remove(f.tokens[0].token), { affectedRecords: 1 }, `remove ${f.name}`);
    }
    equal((await exh.files.find({ rql: rqlBuilder().eq("tags", tag).build() })).page.total, 0, "none left");
});

done("exh");
