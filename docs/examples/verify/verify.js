#!/usr/bin/env node
// Verify an ackd (Standard Webhooks) webhook signature.
//
// usage: node verify.js SECRET WEBHOOK_ID WEBHOOK_TIMESTAMP BODY_FILE|- WEBHOOK_SIGNATURE
// Exits 0 when one of the signatures is valid and the timestamp is within
// 5 minutes of now (VERIFY_NOW=unix-seconds replaces the clock), 1 otherwise.
"use strict";
const crypto = require("node:crypto");
const fs = require("node:fs");

const TOLERANCE_S = 5 * 60;

// body is a Buffer holding the raw request body, before any JSON parsing.
function verify(secret, msgId, timestamp, body, signatureHeader, now) {
  // The timestamp is signed, so a replayed request is caught by its age.
  if (!/^[0-9]+$/.test(timestamp)) return false;
  if (Math.abs(now - Number(timestamp)) > TOLERANCE_S) return false;

  // The key is the base64 after "whsec_".
  const key = Buffer.from(secret.replace(/^whsec_/, ""), "base64");
  const expected = crypto
    .createHmac("sha256", key)
    .update(`${msgId}.${timestamp}.`)
    .update(body)
    .digest("base64");
  const want = Buffer.from(expected);

  // One "v1,<base64>" entry per secret, separated by spaces.
  for (const entry of signatureHeader.split(" ")) {
    const comma = entry.indexOf(",");
    if (comma < 0 || entry.slice(0, comma) !== "v1") continue;
    const got = Buffer.from(entry.slice(comma + 1));
    // timingSafeEqual needs equal lengths; the length is no secret.
    if (got.length === want.length && crypto.timingSafeEqual(got, want)) return true;
  }
  return false;
}

function main(argv) {
  if (argv.length !== 5) {
    console.error("usage: node verify.js SECRET WEBHOOK_ID WEBHOOK_TIMESTAMP BODY_FILE|- WEBHOOK_SIGNATURE");
    return 2;
  }
  const [secret, msgId, timestamp, bodyPath, signatureHeader] = argv;
  const body = fs.readFileSync(bodyPath === "-" ? 0 : bodyPath);
  const now = process.env.VERIFY_NOW ? Number(process.env.VERIFY_NOW) : Math.floor(Date.now() / 1000);
  if (verify(secret, msgId, timestamp, body, signatureHeader, now)) {
    console.log("valid");
    return 0;
  }
  console.error("invalid signature or timestamp");
  return 1;
}

process.exitCode = main(process.argv.slice(2));
