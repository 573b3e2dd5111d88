#!/usr/bin/env bash
# Signs an HS256 JWT with openssl, for `make run`'s demo tokens.
#   jwt.sh SECRET_FILE 'JSON_PAYLOAD'
# The secret is the file's first line, used as PostgREST uses `jwt-secret`
# (its bytes, not base64-decoded). Prints the token.
set -euo pipefail
secret_file=${1:?usage: jwt.sh SECRET_FILE JSON_PAYLOAD}
payload=${2:?usage: jwt.sh SECRET_FILE JSON_PAYLOAD}
secret=$(head -n1 "$secret_file")
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
header=$(printf '%s' '{"alg":"HS256","typ":"JWT"}' | b64url)
body=$(printf '%s' "$payload" | b64url)
sig=$(printf '%s' "$header.$body" | openssl dgst -sha256 -mac HMAC -macopt "key:$secret" -binary | b64url)
printf '%s.%s.%s\n' "$header" "$body" "$sig"
