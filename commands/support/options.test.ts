// The shared option parsers: integers (exponent forms of exact safe integers included) and the
// ranges their messages print (no "Infinity" for the unbounded end, which is refused).
import assert from "node:assert/strict";
import { test } from "node:test";
import { InvalidArgumentError } from "commander";
import { parseFloatArg, parseIntArg } from "./options.js";

const refusal = (fn: () => unknown): string => {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof InvalidArgumentError, String(e));
    return e.message;
  }
  assert.fail("accepted");
};

test("parseIntArg: digits and exact safe integers in exponent form (1e9 is 10⁹); the rest refused with what is wrong", () => {
  const budget = parseIntArg("--budget", 1);
  assert.equal(budget("12"), 12);
  assert.equal(budget("1e9"), 1e9);
  assert.equal(budget("2.5E3"), 2500);
  assert.equal(budget(" 7 "), 7);
  assert.equal(parseIntArg("--seed", 0)("-0"), 0);
  assert.ok(Object.is(parseIntArg("--seed", 0)("-0"), 0), "-0 read as 0");
  for (const bad of ["1.5", "1.5e0", "2.0", "abc", "", "0x10", "1e", "Infinity"])
    assert.match(
      refusal(() => budget(bad)),
      /--budget must be an integer, got/,
      bad,
    );
  assert.match(
    refusal(() => budget("1e300")),
    /--budget must be an integer below 2\^53, got "1e300"/,
  );
  assert.match(
    refusal(() => budget("9007199254740993")),
    /below 2\^53/,
  );
  assert.match(
    refusal(() => budget("0")),
    /--budget must be an integer ≥ 1, got "0"/,
  );
  assert.match(
    refusal(() => budget("-1e2")),
    /≥ 1/,
  );
});

test("parseFloatArg: the range printed is the one accepted, with no Infinity in it", () => {
  const cases: [ReturnType<typeof parseFloatArg>, string, RegExp][] = [
    [parseFloatArg("--lora-alpha", 0, Infinity, true), "Infinity", /^--lora-alpha must be a finite number > 0, got "Infinity"$/],
    [parseFloatArg("--lora-alpha", 0, Infinity, true), "0", /^--lora-alpha must be a finite number > 0, got "0"$/],
    [parseFloatArg("--threshold", 0), "-1", /^--threshold must be a finite number ≥ 0, got "-1"$/],
    [parseFloatArg("--min-norm", 0), "Infinity", /^--min-norm must be a finite number ≥ 0, got "Infinity"$/],
    [parseFloatArg("--x"), "nan", /^--x must be a finite number, got "nan"$/],
    [parseFloatArg("--y", -Infinity, 3), "4", /^--y must be a finite number ≤ 3, got "4"$/],
    [parseFloatArg("--energy", 0, 1, true), "0", /^--energy must be a number in \(0, 1\], got "0"$/],
    [parseFloatArg("--ratio", 0, 1), "2", /^--ratio must be a number in \[0, 1\], got "2"$/],
  ];
  for (const [parse, v, re] of cases) {
    const msg = refusal(() => parse(v));
    assert.match(msg, re);
    assert.doesNotMatch(msg.replace(/got ".*"$/, ""), /Infinity/);
  }
  assert.equal(parseFloatArg("--lora-alpha", 0, Infinity, true)("1e3"), 1000);
});
