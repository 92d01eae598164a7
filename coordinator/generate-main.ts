#!/usr/bin/env node
import { main } from './generate.js';

main(process.argv);
