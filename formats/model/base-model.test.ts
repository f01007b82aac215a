// Opening base models (single file, directory, sharded index) and regenerating the prune fixtures.
import { test } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import { InvalidInputError, UsageError } from "../../common/errors.js";
import { fixturesDir } from "../../test/paths.js";
import { makePruneFixtures } from "../../fixtures/make-prune-fixtures.js";
import { openBaseModel } from "./base-model.js";
import { tempDir } from "../../commands/prune/reference.test.js";

const FX = join(fixturesDir, "prune");

test("a directory with model.safetensors, the file itself, a sharded directory and its index file", async () => {
  for (const [arg, sharded, shards] of [
    [join(FX, "llama-mha"), false, 1],
    [join(FX, "llama-mha", "model.safetensors"), false, 1],
    [join(FX, "llama-gqa"), true, 2],
    [join(FX, "llama-gqa", "model.safetensors.index.json"), true, 2],
  ] as const) {
    const b = await openBaseModel(arg);
    try {
      assert.equal(b.sharded, sharded, arg);
      assert.equal(b.shards.length, shards);
      assert.equal(b.config["model_type"], "llama");
      assert.ok(b.tensors.has("model.layers.0.self_attn.q_proj.weight"));
      assert.ok(b.tensors.has("lm_head.weight"));
    } finally {
      await b.close();
    }
  }
});

test("refusals: missing path (usage), directory without weights, no config.json, index naming a missing tensor (invalid input)", async () => {
  const { dir, done } = tempDir("base");
  try {
    await assert.rejects(openBaseModel(join(dir, "nope")), UsageError);
    mkdirSync(join(dir, "empty"));
    await assert.rejects(openBaseModel(join(dir, "empty")), (e) => e instanceof InvalidInputError && /model\.safetensors/.test(e.message));
    mkdirSync(join(dir, "nocfg"));
    copyFileSync(join(FX, "llama-mha", "model.safetensors"), join(dir, "nocfg", "model.safetensors"));
    await assert.rejects(openBaseModel(join(dir, "nocfg")), (e) => e instanceof InvalidInputError && /config\.json/.test(e.message));
    mkdirSync(join(dir, "badidx"));
    for (const f of readdirSync(join(FX, "llama-gqa"))) copyFileSync(join(FX, "llama-gqa", f), join(dir, "badidx", f));
    const idx = JSON.parse(readFileSync(join(dir, "badidx", "model.safetensors.index.json"), "utf8"));
    idx.weight_map["model.ghost.weight"] = "model-00001-of-00002.safetensors";
    writeFileSync(join(dir, "badidx", "model.safetensors.index.json"), JSON.stringify(idx));
    await assert.rejects(openBaseModel(join(dir, "badidx")), (e) => e instanceof InvalidInputError && /ghost/.test(e.message));
  } finally {
    done();
  }
});

test("fixtures/prune regenerate byte for byte from their seeds, and stay small", async () => {
  const { dir, done } = tempDir("fx");
  try {
    await makePruneFixtures(dir);
    const list = (root: string): string[] =>
      readdirSync(root, { recursive: true, encoding: "utf8" })
        .filter((p) => statSync(join(root, p)).isFile())
        .sort();
    const mine = list(dir),
      committed = list(FX);
    assert.deepEqual(mine, committed);
    let total = 0;
    for (const f of mine) {
      const a = readFileSync(join(dir, f)),
        b = readFileSync(join(FX, f));
      assert.ok(a.equals(b), `${relative(dir, join(dir, f))} differs from the committed fixture`);
      total += a.length;
    }
    assert.ok(total < 2 * 1024 * 1024, `fixtures/prune is ${total} bytes`);
  } finally {
    done();
  }
});
