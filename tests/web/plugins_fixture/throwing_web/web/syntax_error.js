// Not valid JavaScript: the import fails.
export const broken = ;
