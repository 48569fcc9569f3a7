'use strict';
// The addon node-gyp built from sha256_pair.c (see there for what it does and why).
module.exports = require('./build/Release/sha256_pair.node');
