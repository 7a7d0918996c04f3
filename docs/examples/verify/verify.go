// Verify an ackd (Standard Webhooks) webhook signature.
//
// usage: go run verify.go SECRET WEBHOOK_ID WEBHOOK_TIMESTAMP BODY_FILE|- WEBHOOK_SIGNATURE
// Exits 0 when one of the signatures is valid and the timestamp is within
// 5 minutes of now (VERIFY_NOW=unix-seconds replaces the clock), 1 otherwise.
package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

const toleranceS = 5 * 60

// body is the raw request body, before any JSON decoding.
func verify(secret, msgID, timestamp string, body []byte, signatureHeader string, now int64) bool {
	// The timestamp is signed, so a replayed request is caught by its age.
	ts, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil || now-ts > toleranceS || ts-now > toleranceS {
		return false
	}

	// The key is the base64 after "whsec_"; ackd may omit the padding.
	key, err := base64.RawStdEncoding.DecodeString(
		strings.TrimRight(strings.TrimPrefix(secret, "whsec_"), "="))
	if err != nil {
		return false
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(msgID + "." + timestamp + "."))
	mac.Write(body)
	expected := []byte(base64.StdEncoding.EncodeToString(mac.Sum(nil)))

	// One "v1,<base64>" entry per secret, separated by spaces.
	for _, entry := range strings.Fields(signatureHeader) {
		version, sig, ok := strings.Cut(entry, ",")
		if ok && version == "v1" && hmac.Equal([]byte(sig), expected) {
			return true
		}
	}
	return false
}

func main() {
	if len(os.Args) != 6 {
		fmt.Fprintln(os.Stderr, "usage: go run verify.go SECRET WEBHOOK_ID WEBHOOK_TIMESTAMP BODY_FILE|- WEBHOOK_SIGNATURE")
		os.Exit(2)
	}
	secret, msgID, timestamp, bodyPath, signatureHeader := os.Args[1], os.Args[2], os.Args[3], os.Args[4], os.Args[5]
	var body []byte
	var err error
	if bodyPath == "-" {
		body, err = io.ReadAll(os.Stdin)
	} else {
		body, err = os.ReadFile(bodyPath)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	now := time.Now().Unix()
	if v := os.Getenv("VERIFY_NOW"); v != "" {
		if now, err = strconv.ParseInt(v, 10, 64); err != nil {
			fmt.Fprintln(os.Stderr, "VERIFY_NOW:", err)
			os.Exit(2)
		}
	}
	if verify(secret, msgID, timestamp, body, signatureHeader, now) {
		fmt.Println("valid")
		return
	}
	fmt.Fprintln(os.Stderr, "invalid signature or timestamp")
	os.Exit(1)
}
