// Throws while the editor imports it.
throw new Error("fixture extension exploded while loading");
