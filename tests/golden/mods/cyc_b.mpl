import cyc_a
const cb = cyc_a.ca + 1
