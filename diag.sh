t() { local s=$(date +%s%N); "$@" >/dev/null 2>&1; echo "$(( ($(date +%s%N)-s)/1000000 )) ms: $*"; }
t node -e 0
t node -e 'require("./dist/test/contract/harness")'
t node -e 'require("./dist/src/engine/engine")'
t node -e 'require("./dist/src/native/ublk")'
t modprobe ublk_drv
t node -e 'const {Engine}=require("./dist/src/engine/engine"); Engine.start({}).then(e=>e.stop())'
t node -e 'const {Worker}=require("worker_threads"); const w=[];for(let i=0;i<8;i++)w.push(new Promise(r=>{const x=new Worker("require(\"fs\")",{eval:true});x.on("exit",r)}));Promise.all(w)'
t modprobe -r ublk_drv
