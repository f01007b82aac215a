// Reading real torch.save files (written by torch 1.13 at test time): every dtype, strided views
// (transposed, sliced with a storage offset, expanded, permuted), shared storages, a Parameter,
// a module state_dict (OrderedDict with _metadata), the legacy format, protocol 4, deflated
// records and a zip64 end record — each tensor's bytes equal to torch's own contiguous bytes.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { InvalidInputError } from "../../common/errors.js";
import { torchCheckpoints, torchUnavailable } from "../../test/torch-save.js";
import { openTorchCheckpoint, readCheckpointBuffer } from "./index.js";

const skip = torchUnavailable();

for (const name of ["dtypes.pt", "views.pt", "views-legacy.pt", "proto4.pt", "deflated.pt", "zip64.pt", "module.pt", "adapter_model.bin"]) {
  test(`${name}: every tensor's dtype, shape and bytes equal torch's`, { skip }, async () => {
    const { dir, manifest } = torchCheckpoints();
    const want = manifest[name]!;
    const { file, notes } = await openTorchCheckpoint(join(dir, name));
    try {
      assert.deepEqual(
        file.tensors.map((t) => t.name),
        Object.keys(want),
      );
      for (const t of file.tensors) {
        const w = want[t.name]!;
        assert.equal(t.dtype, w.dtype, t.name);
        assert.deepEqual(t.shape, w.shape, t.name);
        assert.equal(Buffer.from(await file.readRaw(t)).toString("hex"), w.hex, t.name);
      }
      assert.match(notes[0]!, /PyTorch checkpoint/);
    } finally {
      await file.close();
    }
  });
}

test("the same bytes from memory as from the file", { skip }, async () => {
  const { dir, manifest } = torchCheckpoints();
  const { file } = await readCheckpointBuffer(readFileSync(join(dir, "views.pt")), "mem");
  for (const t of file.tensors) assert.equal(Buffer.from(await file.readRaw(t)).toString("hex"), manifest["views.pt"]![t.name]!.hex);
});

test("a wrapped state dict is unwrapped and its other entries named in a note", { skip }, async () => {
  const { dir, manifest } = torchCheckpoints();
  const { file, notes } = await openTorchCheckpoint(join(dir, "nested.pt"));
  await file.close();
  assert.deepEqual(
    file.tensors.map((t) => t.name),
    Object.keys(manifest["nested.pt"]!),
  );
  assert.match(notes[0]!, /from ckpt\["state_dict"\]/);
});

test("tensors in more than one place, or in a list, are refused with the places named", { skip }, async () => {
  const { dir } = torchCheckpoints();
  await assert.rejects(openTorchCheckpoint(join(dir, "ambiguous.pt")), (e: unknown) => {
    assert.ok(e instanceof InvalidInputError);
    assert.match(e.message, /\["model"\], \["optimizer"\]\["state"\]\[0\]/);
    assert.match(e.hint ?? "", /torch\.save\(ckpt\["model"\]/);
    return true;
  });
  await assert.rejects(openTorchCheckpoint(join(dir, "list.pt")), /more than one place \(\[0\], \[1\]\)/);
});

for (const [name, global] of [
  ["system.pt", "posix.system"],
  ["system-legacy.pt", "posix.system"],
  ["eval.pt", "__builtin__.eval"],
  ["other.pt", "collections.Counter"],
  ["stack-global.pt", "posix.system"],
  ["inst.pt", "os.system"],
  ["obj.pt", "os.system"],
  ["builtins-eval.pt", "builtins.eval"],
] as const) {
  test(`hostile ${name}: refused naming ${global}`, { skip }, async () => {
    const { dir } = torchCheckpoints();
    await assert.rejects(openTorchCheckpoint(join(dir, name)), (e: unknown) => {
      assert.ok(e instanceof InvalidInputError, String(e));
      assert.equal((e as InvalidInputError).code, "PICKLE_GLOBAL_REFUSED");
      assert.ok(e.message.includes(` ${global}, which lora refuses`), e.message);
      return true;
    });
  });
}
