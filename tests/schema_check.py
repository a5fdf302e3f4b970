"""Validate config files against the OpenClaw manifest's configSchema with an
independent validator (python-jsonschema, Draft 7 like OpenClaw's AJV).

Usage: schema_check.py MANIFEST CONFIG...   Prints a JSON list of booleans.
"""
import json
import sys

from jsonschema import Draft7Validator

schema = json.load(open(sys.argv[1]))["configSchema"]
Draft7Validator.check_schema(schema)
validator = Draft7Validator(schema)
print(json.dumps([validator.is_valid(json.load(open(p))) for p in sys.argv[2:]]))
