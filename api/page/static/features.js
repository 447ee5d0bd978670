// The artifact contract in the browser: the preprocessing spec (preprocess.json) read as
// contract/features.py reads it in numpy, the answer rule of contract/labels.py, and the
// graph's output names of contract/artifact.py. The features themselves are defined once, in
// the spec the service sends; tests/unit/test_page_contract.py holds these constants to the
// Python ones.

export const TIE = 1e-6;
export const OUTPUTS = { classification: "probabilities", regression: "variable" };

function malformed(detail) {
  return new Error(`preprocess spec is malformed: ${detail}`);
}

/** Raw rows (values in schema order, null where missing) -> the float32 matrix the graph takes. */
export class FeatureBuilder {
  constructor(spec, names) {
    if (!spec || !Array.isArray(spec.inputs) || !Array.isArray(spec.numeric)
        || !Array.isArray(spec.categorical)) {
      throw malformed("it needs inputs, numeric and categorical lists");
    }
    this.inputs = spec.inputs.map(String);
    const position = new Map(names.map((name, i) => [name, i]));
    const numeric = spec.numeric.map((n) => {
      if (typeof n.fill !== "number" || !Number.isFinite(n.fill)) {
        throw malformed(`${n.name} has no numeric fill`);
      }
      return [String(n.name), n.fill];
    });
    const categorical = spec.categorical.map((c) => {
      if (!Array.isArray(c.categories) || c.fill === null || c.fill === undefined) {
        throw malformed(`${c.name} needs a fill and a list of categories`);
      }
      return [String(c.name), String(c.fill), c.categories.map(String)];
    });
    const unknown = [...numeric, ...categorical].map(([n]) => n).filter((n) => !position.has(n));
    if (unknown.length) {
      throw new Error(`preprocess spec names columns not in the schema: ${unknown.join(", ")}`);
    }
    this.numeric = numeric.map(([name, fill]) => [position.get(name), fill]);
    let offset = numeric.length;
    this.categorical = categorical.map(([name, fill, categories]) => {
      const columns = new Map(categories.map((c, i) => [c, offset + i]));
      offset += categories.length;
      return [position.get(name), fill, columns];
    });
    if (offset !== this.inputs.length) {
      throw new Error(`preprocess spec has ${offset} columns for ${this.inputs.length} inputs`);
    }
  }

  /** One float32 row per instance; a missing number takes its fill, a missing category its
   * fill, then one-hot over the categories (an unknown category is all zeros). */
  rows(rows) {
    const width = this.inputs.length;
    const out = new Float32Array(rows.length * width);
    rows.forEach((row, i) => {
      const base = i * width;
      this.numeric.forEach(([at, fill], j) => {
        const value = row[at];
        out[base + j] = value === null || value === undefined ? fill : value;
      });
      for (const [at, fill, columns] of this.categorical) {
        const value = row[at];
        const column = columns.get(value === null || value === undefined ? fill : value);
        if (column !== undefined) out[base + column] = 1;
      }
    });
    return out;
  }
}

/** Index of the answered class: the first whose probability is within TIE of the highest,
 * computed in float32 as numpy computes it on the graph's float32 output. */
export function labelIndex(probabilities) {
  const highest = Math.max(...probabilities);
  const bar = Math.fround(highest - Math.fround(TIE));
  return probabilities.findIndex((p) => p >= bar);
}
