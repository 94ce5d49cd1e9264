// The browser softphone: talks to the agent with the microphone over the same Media
// Streams protocol Twilio uses (connected, start, media, mark, stop in; media, mark,
// clear out), on the console's own socket /console/media with a stream token the
// console minted (POST /console/call). Audio work happens in softphone-worklet.js.

function b64encode(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
  return btoa(s);
}

function b64decode(text) {
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

export class Softphone {
  constructor({ onState = () => {}, onLevel = () => {}, onCall = () => {} } = {}) {
    this.onState = onState;
    this.onLevel = onLevel;
    this.onCall = onCall;
    this.state = "idle";
    this.seq = 0;
    this.chunk = 0;
    this.stats = { framesSent: 0, framesReceived: 0, marksEchoed: 0, clears: 0 };
  }

  setState(state, detail = "") {
    this.state = state;
    this.onState(state, detail);
  }

  async start() {
    if (this.state !== "idle" && this.state !== "ended") return;
    this.setState("starting");
    this.seq = 0;
    this.chunk = 0;
    try {
      // The AudioContext is created inside the click that called start(): autoplay allows it.
      this.ctx = new AudioContext();
      const minted = await fetch("console/call", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: "{}",
      });
      if (!minted.ok) throw new Error(`console refused the call: ${minted.status} ${await minted.text()}`);
      this.info = await minted.json();
      await this.ctx.audioWorklet.addModule("console/static/softphone-worklet.js");
      this.stream = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: true, noiseSuppression: false, autoGainControl: false },
      });
      this.source = this.ctx.createMediaStreamSource(this.stream);
      this.node = new AudioWorkletNode(this.ctx, "softphone", {
        numberOfInputs: 1,
        numberOfOutputs: 1,
        outputChannelCount: [1],
      });
      this.node.port.onmessage = (e) => this.fromWorklet(e.data);
      this.source.connect(this.node);
      this.node.connect(this.ctx.destination);
      await this.ctx.resume();
      this.open();
    } catch (err) {
      this.cleanup();
      this.setState("ended", String(err.message || err));
    }
  }

  open() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = (this.ws = new WebSocket(`${scheme}://${location.host}${this.info.path}`));
    ws.onopen = () => {
      const { callSid, streamSid, accountSid, customParameters } = this.info;
      this.send({ event: "connected", protocol: "Call", version: "1.0.0" });
      this.send({
        event: "start",
        streamSid,
        start: {
          accountSid, callSid, streamSid, customParameters,
          tracks: ["inbound"],
          mediaFormat: { encoding: "audio/x-mulaw", sampleRate: 8000, channels: 1 },
        },
      });
      this.setState("live");
      this.onCall(callSid);
    };
    ws.onmessage = (e) => this.fromGateway(JSON.parse(e.data));
    ws.onclose = (e) => {
      this.cleanup();
      this.setState("ended", e.reason || `closed ${e.code}`);
    };
  }

  send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      message.sequenceNumber = String(++this.seq);
      this.ws.send(JSON.stringify(message));
    }
  }

  fromGateway(msg) {
    if (!this.node) return;
    if (msg.event === "media") {
      this.stats.framesReceived++;
      const payload = b64decode(msg.media.payload);
      this.node.port.postMessage({ type: "media", payload }, [payload.buffer]);
    } else if (msg.event === "mark") {
      this.node.port.postMessage({ type: "mark", name: msg.mark.name });
    } else if (msg.event === "clear") {
      this.stats.clears++;
      this.node.port.postMessage({ type: "clear" });
    }
  }

  fromWorklet(m) {
    if (m.type === "frame") {
      if (this.state !== "live") return;
      this.chunk++;
      this.stats.framesSent++;
      this.send({
        event: "media",
        streamSid: this.info.streamSid,
        media: { track: "inbound", chunk: String(this.chunk), timestamp: String(this.chunk * 20), payload: b64encode(m.payload) },
      });
    } else if (m.type === "played") {
      this.echoMark(m.name);
    } else if (m.type === "cleared") {
      m.marks.forEach((name) => this.echoMark(name));
    } else if (m.type === "level") {
      this.onLevel(m.inPeak, m.outPeak);
    }
  }

  echoMark(name) {
    this.stats.marksEchoed++;
    this.send({ event: "mark", streamSid: this.info.streamSid, mark: { name } });
  }

  mute(muted) {
    if (this.node) this.node.port.postMessage({ type: "mute", muted });
  }

  hangUp() {
    if (this.state !== "live") return;
    this.send({ event: "stop", streamSid: this.info.streamSid, stop: { accountSid: this.info.accountSid, callSid: this.info.callSid } });
    this.ws.close(1000, "hung up");
  }

  cleanup() {
    if (this.stream) this.stream.getTracks().forEach((t) => t.stop());
    if (this.ctx && this.ctx.state !== "closed") this.ctx.close();
    this.stream = this.ctx = this.node = this.source = null;
  }
}
