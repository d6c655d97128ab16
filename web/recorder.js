// The AudioWorklet processor of app.js: hands the microphone's samples, mixed to mono, to the page in blocks.
const BLOCK = 2048;  // samples per message (43 ms at 48 kHz): fewer messages than the 128 of each process()

class Recorder extends AudioWorkletProcessor {
  constructor() {
    super();
    this.block = new Float32Array(BLOCK);
    this.filled = 0;
  }

  process(inputs) {
    const channels = inputs[0];
    for (let i = 0; channels.length && i < channels[0].length; i++) {
      let sum = 0;
      for (const channel of channels) sum += channel[i];
      this.block[this.filled++] = sum / channels.length;
      if (this.filled === BLOCK) {
        this.port.postMessage(this.block);
        this.block = new Float32Array(BLOCK);
        this.filled = 0;
      }
    }
    return true;  // keep running until the page closes the AudioContext
  }
}

registerProcessor('recorder', Recorder);
