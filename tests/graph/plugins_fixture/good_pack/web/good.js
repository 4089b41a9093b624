// The good fixture plugin's browser extension.
export const GOOD_PACK = "good_pack";
