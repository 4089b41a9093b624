// The V1 fixture plugin's browser extension, served at /extensions/v1_pack/v1_pack.js.
export const V1_PACK = "v1_pack";
