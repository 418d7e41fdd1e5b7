"""Admin command line: users and API keys, against whatever table the environment names.

    python -m calbot.admin create-user [--email E] [--user-id U]
    python -m calbot.admin create-api-key --user-id U
    python -m calbot.admin revoke-api-key (--key K | --key-id ID --user-id U)
    python -m calbot.admin list-api-keys --user-id U

Needs TABLE_NAME and SSM_PREFIX (and AWS credentials / AWS_ENDPOINT_URL as boto3 reads them).
A new key is printed once; only its SHA-256 is stored.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import sys

from botocore.exceptions import ClientError

from calbot import auth, store
from calbot.models import User
from calbot.timeutil import now

_USER_ID = re.compile(r"^[A-Za-z0-9_\-]{3,64}$")


def create_user(email: str | None = None, user_id: str | None = None) -> User:
    user = User(user_id=user_id or f"usr_{secrets.token_hex(8)}", email=email, created_at=now())
    store.put_user(user)
    return user


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="calbot-admin", description="Manage calbot users and API keys.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("create-user", help="create a user (prints its id)")
    p.add_argument("--email")
    p.add_argument("--user-id", help="choose the id (default: random usr_...)")
    p.add_argument("--with-key", action="store_true", help="also issue an API key")
    p = sub.add_parser("create-api-key", help="issue an API key for a user (printed once)")
    p.add_argument("--user-id", required=True)
    p = sub.add_parser("revoke-api-key", help="revoke a key by its value or its key id")
    p.add_argument("--key")
    p.add_argument("--key-id")
    p.add_argument("--user-id")
    p = sub.add_parser("list-api-keys", help="list a user's key ids (never the keys)")
    p.add_argument("--user-id", required=True)
    args = parser.parse_args(argv)

    try:
        if args.command == "create-user":
            if args.user_id and not _USER_ID.match(args.user_id):
                parser.error("--user-id must be 3-64 characters of letters, digits, '_' or '-'")
            user = create_user(args.email, args.user_id)
            out: dict = {"user_id": user.user_id, "email": user.email}
            if args.with_key:
                key, record = auth.issue_api_key(user.user_id)
                out |= {"api_key": key, "key_id": record.key_id}
            print(json.dumps(out))
        elif args.command == "create-api-key":
            if store.get_user(args.user_id) is None:
                print(f"error: no user {args.user_id}", file=sys.stderr)
                return 1
            key, record = auth.issue_api_key(args.user_id)
            print(json.dumps({"user_id": args.user_id, "api_key": key, "key_id": record.key_id}))
        elif args.command == "revoke-api-key":
            if not args.key and not (args.key_id and args.user_id):
                parser.error("give --key, or --key-id with --user-id")
            if not auth.revoke(key=args.key, key_id=args.key_id, user_id=args.user_id):
                print("error: no such key", file=sys.stderr)
                return 1
            print(json.dumps({"revoked": True}))
        elif args.command == "list-api-keys":
            keys = store.list_api_keys(args.user_id)
            print(json.dumps([{"key_id": k.key_id, "created_at": k.created_at.isoformat()} for k in keys]))
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
            print("error: already exists", file=sys.stderr)
            return 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
