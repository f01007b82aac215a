// The layer rules of issue 16, checked in `npm test` (test/layers.test.ts runs depcruise with this file):
//   bin → commands → surgery → formats, linalg → common; no cycles; formats and linalg know nothing
//   of each other; nothing below commands imports commands; no command imports another
//   (commands/support is CLI plumbing every command shares; commands/index.ts registers them all).
//   Cycles are checked everywhere; the layer rules bind the product code, not its tests (a test of
//   formats/ may compute a ΔW with linalg/ to check what it read).
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: "no-circular",
      severity: "error",
      comment: "Files that import each other in a loop.",
      from: {},
      to: { circular: true },
    },
    {
      name: "formats-not-linalg",
      severity: "error",
      comment: "formats/ turns bytes into the adapter model and back; it computes nothing.",
      from: { path: "^formats/", pathNot: "\\.test\\.tsx?$" },
      to: { path: "^linalg/" },
    },
    {
      name: "linalg-not-formats",
      severity: "error",
      comment: "linalg/ works on arrays only; shared errors and dtype codecs are in common/.",
      from: { path: "^linalg/", pathNot: "\\.test\\.tsx?$" },
      to: { path: "^formats/" },
    },
    {
      name: "common-is-the-ground",
      severity: "error",
      comment: "common/ (errors, atomic outputs, dtype codecs) is used by every layer and uses none.",
      from: { path: "^common/", pathNot: "\\.test\\.tsx?$" },
      to: { path: "^(bin|commands|surgery|formats|linalg)/" },
    },
    {
      name: "lower-layers-not-surgery",
      severity: "error",
      comment: "surgery/ is the domain layer between the commands and formats/linalg.",
      from: { path: "^(linalg|formats|common)/", pathNot: "\\.test\\.tsx?$" },
      to: { path: "^surgery/" },
    },
    {
      name: "nothing-below-commands-imports-commands",
      severity: "error",
      comment:
        "surgery/, formats/, linalg/ and common/ never import a command. The one exception, " +
        "commands/prune/base-model.ts, is being moved to formats/model/ on another branch: drop it from pathNot then.",
      from: { path: "^(surgery|formats|linalg|common)/", pathNot: "\\.test\\.tsx?$" },
      to: { path: "^commands/", pathNot: "^commands/prune/base-model\\.ts$" },
    },
    {
      name: "no-command-imports-another",
      severity: "error",
      comment: "Each command folder imports only itself, commands/support and the layers below.",
      from: { path: "^commands/([^/]+)/", pathNot: "^commands/support/|\\.test\\.tsx?$" },
      to: { path: "^commands/", pathNot: ["^commands/$1/", "^commands/support/"] },
    },
    {
      name: "nothing-imports-bin",
      severity: "error",
      comment: "bin/ is the process boundary: it imports the program, never the other way round.",
      from: { pathNot: "^bin/" },
      to: { path: "^bin/" },
    },
    {
      name: "not-to-unresolvable",
      severity: "error",
      comment: "An import that resolves to nothing.",
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    exclude: { path: "^(node_modules|dist|native)/" },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
    enhancedResolveOptions: {
      exportsFields: ["exports"],
      conditionNames: ["import", "require", "node", "default", "types"],
      extensions: [".ts", ".tsx", ".js", ".mjs", ".cjs", ".json", ".d.ts"],
    },
  },
};
