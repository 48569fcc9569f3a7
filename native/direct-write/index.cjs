'use strict';
// The addon node-gyp built from direct_write.c (see there for what it does and why).
module.exports = require('./build/Release/direct_write.node');
