# One bulk TCP stream, 3 GiB, through a port, for the sockmap experiment (docs/benchmarks.md).
#   python3 bulk.py SERVER_PORT CONNECT_PORT DUMMY_FIRST(0|1) LABEL
# Listens on 127.0.0.1:SERVER_PORT, connects to 127.0.0.1:CONNECT_PORT (with DUMMY_FIRST=1 one
# connection first, which sockmap-exp copies in user space), sends, prints Gbit/s received.
import socket, time, threading, sys
lport, tport, dummy = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == '1'
srv=socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR,1); srv.bind(('127.0.0.1',lport)); srv.listen()
time.sleep(1.5)
if dummy:
    c1=socket.create_connection(('127.0.0.1',tport)); s1,_=srv.accept()
c2=socket.create_connection(('127.0.0.1',tport)); s2,_=srv.accept()
time.sleep(0.3)
N=3*1024*1024*1024; got=[0]
def rx():
    s2.settimeout(5)
    while got[0] < N:
        b=s2.recv(1<<20)
        if not b: break
        got[0]+=len(b)
t=threading.Thread(target=rx); t.start()
buf=b'x'*(1<<20); sent=0; t0=time.time()
while sent < N: sent += c2.send(buf)
t.join(); dt=time.time()-t0
print(f"{sys.argv[4]}: {got[0]/dt*8/1e9:.2f} Gbit/s")
