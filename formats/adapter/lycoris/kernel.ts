// A conv module whose LyCORIS factors are stored flattened (LoHa `hada_w1_b [r, in·kh·kw]`, LoKr
// `lokr_w2_b [r, d·kh·kw]`) does not record its kernel. Assumption (docs/formats.md "LyCORIS"):
// the Stable Diffusion UNet's 3×3 convolutions are recognised by their kohya names (sgm
// `in_layers_2`, `out_layers_3`, `op`, sampler `conv`; diffusers `conv1`, `conv2`, `conv`,
// `conv_in`, `conv_out`) when the column count divides by 9; every other flattened module is read
// as a linear one ([out, in·kh·kw]; a 1×1 conv is the same matrix).
const CONV3 = /_(in_layers_2|out_layers_3|op|conv|conv1|conv2|conv_in|conv_out)$/;

export function inferKernel(stem: string, cols: number): number[] | undefined {
  return CONV3.test(stem) && cols % 9 === 0 ? [3, 3] : undefined;
}
