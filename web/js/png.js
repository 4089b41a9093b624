// Read the text chunks of a PNG (tEXt, zTXt, iTXt), where ComfyUI-style tools store `workflow` and `prompt`.

const SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];

async function inflate(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** {keyword: text} of every text chunk; throws when the bytes are not a PNG. */
export async function readPngText(buffer) {
  const bytes = new Uint8Array(buffer);
  if (!SIGNATURE.every((b, i) => bytes[i] === b)) throw new Error("not a PNG file (bad signature)");
  const view = new DataView(buffer);
  const latin1 = new TextDecoder("latin1");
  const utf8 = new TextDecoder("utf-8");
  const texts = {};
  let offset = 8;
  while (offset + 8 <= bytes.length) {
    const length = view.getUint32(offset);
    const type = latin1.decode(bytes.subarray(offset + 4, offset + 8));
    const data = bytes.subarray(offset + 8, offset + 8 + length);
    if (type === "IEND") break;
    const zero = data.indexOf(0);
    if (zero > 0 && (type === "tEXt" || type === "zTXt" || type === "iTXt")) {
      const key = latin1.decode(data.subarray(0, zero));
      if (type === "tEXt") {
        texts[key] = latin1.decode(data.subarray(zero + 1));
      } else if (type === "zTXt") {
        texts[key] = latin1.decode(await inflate(data.subarray(zero + 2)));
      } else {
        const compressed = data[zero + 1] === 1;
        let rest = zero + 3;
        rest = data.indexOf(0, rest) + 1; // language tag
        rest = data.indexOf(0, rest) + 1; // translated keyword
        const body = data.subarray(rest);
        texts[key] = utf8.decode(compressed ? await inflate(body) : body);
      }
    }
    offset += 12 + length;
  }
  return texts;
}
