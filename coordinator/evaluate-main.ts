#!/usr/bin/env node
import { main } from './evaluate-cli.js';

main(process.argv);
