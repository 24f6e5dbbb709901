# A file with no model: the error is located at the file (pass 52: it had no place).
const n = 3
