// The file and token flows of the official enmeshed Connector SDK (@nmshd/connector-sdk 6.x), run
// unchanged against a cairn node's /api/v2. Usage:
//   CAIRN_URL=http://127.0.0.1:8081 CAIRN_API_KEY=… node nmshd.mjs
//
// The SDK answers every call with a ConnectorHttpResponse (isSuccess/result or isError/error) and
// only throws when a non-2xx answer lacks the error envelope, so each step checks the result shape.

import { ConnectorClient } from "@nmshd/connector-sdk";
import { bytesEqual, check, config, content, done, equal, gap, isoMillis, step } from "./harness.mjs";

const { baseUrl, apiKey, run } = config();

const fileId = /^FIL[A-Za-z0-9]{17}$/;
const tokenId = /^TOK[A-Za-z0-9]{17}$/;
const errorId = /^ERR[A-Za-z0-9]{17}$/;
const pngSignature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

const title = `sdk e2e ${run}`;
const filename = `sdk-e2e-${run}.txt`;
const data = content(1024 * 1024 + 513); // two erasure blocks, the second partial
const fileExpiresAt = "2099-06-30T12:00:00.000Z";
const tokenExpiresAt = new Date(Date.now() + 3600_000).toISOString();
let client; // the application's client
let file; // the uploaded FileDTO
let persisted; // the persisted TokenDTO

/** ok unwraps a successful ConnectorHttpResponse and fails with the error envelope otherwise. */
function ok(res, what) {
    check(res?.isSuccess, `${what}: want success`, res?.isError ? res.error : res);
    return res.result;
}

/** failure checks a ConnectorHttpResponse error: its code, its message and the envelope's fields. */
function failure(res, code, message, what) {
    check(res?.isError, `${what}: want an error ${code}`, res?.isSuccess ? res.result : res);
    const e = res.error;
    equal(e.code, code, `${what}: error.code`);
    if (message !== undefined) equal(e.message, message, `${what}: error.message`);
    check(errorId.test(e.id ?? ""), `${what}: error.id is ERR + 17 characters`, e.id);
    check(isoMillis.test(e.time ?? ""), `${what}: error.time is UTC with milliseconds`, e.time);
    check(typeof e.docs === "string" && e.docs !== "", `${what}: error.docs is set`, e.docs);
}

/** tokenShape checks a TokenDTO for the file against the SDK's ConnectorToken type. */
function tokenShape(t, ephemeral, expiresAt, what) {
    check(tokenId.test(t.id ?? ""), `${what}: id is TOK + 17 characters`, t.id);
    equal(t.isEphemeral, ephemeral, `${what}: isEphemeral`);
    equal(t.content, { "@type": "TokenContentFile", fileId: file.id }, `${what}: content`);
    equal(t.expiresAt, expiresAt, `${what}: expiresAt`);
    equal(t.createdBy, file.createdBy, `${what}: createdBy`);
    check(isoMillis.test(t.createdAt ?? ""), `${what}: createdAt is UTC with milliseconds`, t.createdAt);
    check(typeof t.truncatedReference === "string" && t.truncatedReference.length >= 32,
        `${what}: truncatedReference is a bearer secret`, t.truncatedReference);
    gap(typeof t.createdByDevice === "string",
        "TokenDTO lacks createdByDevice (SDK type ConnectorToken.createdByDevice: string)", t);
}

await step("ConnectorClient.create({baseUrl, apiKey})", async () => {
    client = ConnectorClient.create({ baseUrl, apiKey });
    check(client.files && client.tokens, "the client has files and tokens endpoints");
});

await step("files.uploadOwnFile({title, description, expiresAt, file, filename}) answers 201 FileDTO", async () => {
    file = ok(await client.files.uploadOwnFile({
        title, description: "uploaded by the connector SDK", expiresAt: "2099-06-30T14:00:00+02:00", file: data, filename,
    }), "uploadOwnFile");
    check(fileId.test(file.id ?? ""), "id is FIL + 17 characters", file.id);
    equal(file.isOwn, true, "isOwn");
    equal(file.filename, filename, "filename");
    equal(file.filesize, data.length, "filesize");
    equal(file.title, title, "title");
    equal(file.description, "uploaded by the connector SDK", "description");
    equal(file.expiresAt, fileExpiresAt, "expiresAt, normalised to UTC with milliseconds");
    equal(file.mimetype, "text/plain", "mimetype (form-data's guess for .txt)");
    check(isoMillis.test(file.createdAt ?? ""), "createdAt is UTC with milliseconds", file.createdAt);
    check(typeof file.createdBy === "string" && file.createdBy !== "", "createdBy is set", file.createdBy);
    check(typeof file.createdByDevice === "string" && file.createdByDevice !== "", "createdByDevice is set", file);
    gap(typeof file.truncatedReference === "string" && file.truncatedReference !== "",
        "FileDTO lacks truncatedReference (SDK type ConnectorFile.truncatedReference: string)", file);
});

await step("files.getFile(id) answers the same FileDTO", async () => {
    equal(ok(await client.files.getFile(file.id), "getFile"), file, "getFile");
});

await step("files.getOwnFiles() and getFiles() list it; the title and filename filters find it alone", async () => {
    const own = ok(await client.files.getOwnFiles(), "getOwnFiles");
    check(Array.isArray(own) && own.some((f) => f.id === file.id), "getOwnFiles lists the upload", own.length);
    const all = ok(await client.files.getFiles(), "getFiles");
    check(all.some((f) => f.id === file.id), "getFiles lists the upload", all.length);
    equal(ok(await client.files.getOwnFiles({ title }), "getOwnFiles({title})"), [file], "getOwnFiles({title})");
    equal(ok(await client.files.getFiles({ filename: [filename, "absent.txt"] }), "getFiles({filename: [..]})"), [file],
        "getFiles({filename: [a, b]}) (repeated key: any of)");
    equal(ok(await client.files.getOwnFiles({ title: `^sdk e2e ${run}`, filesize: `>${data.length - 1}` }),
        "getOwnFiles(prefix filters)"), [file], "getOwnFiles({title: ^…, filesize: >…})");
});

await step("files.downloadFile(id) returns the uploaded bytes", async () => {
    bytesEqual(ok(await client.files.downloadFile(file.id), "downloadFile"), data, "downloadFile");
});

let ephemeral;
await step("files.createTokenForFile(id, {expiresAt, ephemeral: true}) answers 201 ephemeral TokenDTO", async () => {
    ephemeral = ok(await client.files.createTokenForFile(file.id, { expiresAt: tokenExpiresAt, ephemeral: true }),
        "createTokenForFile(ephemeral)");
    tokenShape(ephemeral, true, tokenExpiresAt, "ephemeral token");
});

await step("the ephemeral token's truncatedReference reads the file through /files/v1", async () => {
    const res = await fetch(`${baseUrl}/files/v1/${encodeURIComponent(ephemeral.truncatedReference)}/file`);
    equal(res.status, 200, "GET /files/v1/{truncatedReference}/file status");
    bytesEqual(Buffer.from(await res.arrayBuffer()), data, "bytes through the other API");
});

await step("tokens.getToken(ephemeral id) is 404 error.runtime.recordNotFound", async () => {
    failure(await client.tokens.getToken(ephemeral.id), "error.runtime.recordNotFound", undefined, "getToken(ephemeral)");
});

await step("files.createTokenForFile(id, {expiresAt, ephemeral: false}) answers 201 persisted TokenDTO", async () => {
    persisted = ok(await client.files.createTokenForFile(file.id, { expiresAt: tokenExpiresAt, ephemeral: false }),
        "createTokenForFile(persisted)");
    tokenShape(persisted, false, tokenExpiresAt, "persisted token");
});

await step("tokens.getToken(persisted id) answers the same TokenDTO", async () => {
    equal(ok(await client.tokens.getToken(persisted.id), "getToken"), persisted, "getToken");
});

await step("files.createTokenForFile(id) without a body defaults to ephemeral, expiring with the file", async () => {
    const t = ok(await client.files.createTokenForFile(file.id), "createTokenForFile(no body)");
    tokenShape(t, true, fileExpiresAt, "default token");
});

await step("files.createTokenQrCodeForFile(id) answers 201 with a PNG", async () => {
    const png = ok(await client.files.createTokenQrCodeForFile(file.id), "createTokenQrCodeForFile");
    check(Buffer.isBuffer(png) && png.subarray(0, 8).equals(pngSignature), "a PNG image",
        Buffer.from(png ?? []).subarray(0, 16));
    const withExpiry = ok(await client.files.createTokenQrCodeForFile(file.id, { expiresAt: tokenExpiresAt }),
        "createTokenQrCodeForFile({expiresAt})");
    check(withExpiry.subarray(0, 8).equals(pngSignature), "a PNG image with expiresAt");
});

const unknown = "FIL" + "A".repeat(17);
await step("an unknown file id is 404 error.runtime.recordNotFound on getFile, downloadFile, createTokenForFile", async () => {
    const msg = "File not found. Make sure the ID exists and the record is not expired.";
    failure(await client.files.getFile(unknown), "error.runtime.recordNotFound", msg, "getFile");
    failure(await client.files.downloadFile(unknown), "error.runtime.recordNotFound", msg, "downloadFile");
    failure(await client.files.createTokenForFile(unknown, { ephemeral: false }), "error.runtime.recordNotFound", msg,
        "createTokenForFile");
});

await step("validation errors come before existence, in the envelope the SDK reads", async () => {
    const past = "2001-01-01T00:00:00.000Z";
    failure(await client.files.createTokenForFile(unknown, { expiresAt: past }),
        "error.runtime.validation.invalidPropertyValue", "'expiresAt' must be in the future", "past expiresAt, unknown id");
    failure(await client.files.createTokenForFile(file.id, { expiresAt: "soon" }),
        "error.runtime.validation.invalidPropertyValue", "expiresAt must match ISO8601 datetime format", "bad expiresAt");
    failure(await client.files.createTokenForFile(file.id, { ephemeral: "yes" }),
        "error.runtime.validation.invalidPropertyValue", "ephemeral must be boolean", "ephemeral not a boolean");
    failure(await client.files.getFile("FIL-not-an-id"), "error.runtime.validation.invalidPropertyValue", undefined,
        "malformed id");
    failure(await client.files.uploadOwnFile({ title, expiresAt: past, file: Buffer.from("x"), filename: "x.txt" }),
        "error.runtime.validation.invalidPropertyValue", undefined, "upload with a past expiresAt");
});

await step("a wrong API key is 401 in the error envelope", async () => {
    const stranger = ConnectorClient.create({ baseUrl, apiKey: `wrong-${run}` });
    failure(await stranger.files.getOwnFiles(), "error.connector.unauthorized", undefined, "getOwnFiles with a wrong key");
});

await step("SDK file and token methods beyond the contract", async () => {
    // getQrCodeForFile and getQrCodeForToken are GETs with Accept: image/png in the same SDK; an
    // application may call them, so their answer is recorded rather than assumed. The SDK throws
    // (instead of answering isError) when such a call fails, since it cannot read a JSON error there.
    const qr = async (call) => {
        try {
            const res = await call();
            if (res.isError) return res.error;
            return Buffer.from(res.result).subarray(0, 8).equals(pngSignature) ? "png" : res.result;
        } catch (err) {
            return err.message;
        }
    };
    const fileQr = await qr(() => client.files.getQrCodeForFile(file.id));
    gap(fileQr === "png", "files.getQrCodeForFile(id): GET /api/v2/Files/{id} with Accept: image/png should answer 200 PNG",
        fileQr);
    const tokenQr = await qr(() => client.tokens.getQrCodeForToken(persisted.id));
    gap(tokenQr === "png",
        "tokens.getQrCodeForToken(id): GET /api/v2/Tokens/{id} with Accept: image/png should answer 200 PNG", tokenQr);
    for (const [key, value] of [["description", file.description], ["createdByDevice", file.createdByDevice]]) {
        const res = await client.files.getOwnFiles({ [key]: value });
        gap(res.isSuccess && res.result.some((f) => f.id === file.id),
            `files.getOwnFiles({${key}}): a filter key of the SDK's GetOwnFilesRequest should be accepted`,
            res.isError ? res.error : res.result.length);
    }
});

await step("DELETE /api/v2/Files/{id} (raw HTTP: the SDK has no delete) ends file and tokens", async () => {
    const res = await fetch(`${baseUrl}/api/v2/Files/${file.id}`, { method: "DELETE", headers: { "X-API-KEY": apiKey } });
    equal(res.status, 204, "DELETE status");
    failure(await client.files.getFile(file.id), "error.runtime.recordNotFound", undefined, "getFile after delete");
    failure(await client.tokens.getToken(persisted.id), "error.runtime.recordNotFound", undefined, "getToken after delete");
    const read = await fetch(`${baseUrl}/files/v1/${encodeURIComponent(ephemeral.truncatedReference)}/details`);
    equal(read.status, 400, "the ephemeral token no longer reads /files/v1 details");
});

done("nmshd");
