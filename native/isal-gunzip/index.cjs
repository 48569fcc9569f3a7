'use strict';
// The addon node-gyp built from gunzip.c (see there for what it does and why).
module.exports = require('./build/Release/isal_gunzip.node');
