"""Writes other_languages.jsonl: programming questions written in Spanish and Russian for the monitoring tests
(the real pools hold English only). Kept as a script so the file's origin is visible; run it to regenerate."""

import json
from pathlib import Path

ES = [
    ("¿Cómo invierto una lista en Python?", "Tengo una lista de números y necesito recorrerla al revés sin modificar la original. ¿Cuál es la forma más idiomática de hacerlo?"),
    ("Error de codificación al leer un archivo CSV", "Al abrir un archivo CSV con pandas me aparece UnicodeDecodeError. El archivo viene de Excel y tiene acentos y eñes. ¿Qué parámetro debo usar?"),
    ("¿Por qué mi función devuelve None?", "Escribí una función recursiva que suma los elementos de una lista, pero siempre obtengo None en lugar del resultado. ¿Qué estoy haciendo mal?"),
    ("Cómo ordenar un diccionario por sus valores", "Necesito mostrar las palabras más frecuentes de un texto. Tengo un diccionario con las palabras y sus conteos, pero no sé cómo ordenarlo de mayor a menor."),
    ("Diferencia entre una lista y una tupla", "Estoy aprendiendo Python y no entiendo cuándo conviene usar una tupla en vez de una lista. ¿Hay alguna diferencia de rendimiento?"),
    ("No puedo conectar con la base de datos MySQL desde Flask", "Mi aplicación funciona en local, pero cuando la subo al servidor la conexión falla con un error de acceso denegado para el usuario. Ya revisé la contraseña."),
    ("¿Cómo comprobar si un archivo existe antes de abrirlo?", "Quiero evitar que el programa se detenga cuando el archivo no está en la carpeta. ¿Debo capturar la excepción o comprobarlo antes?"),
    ("El bucle for no termina nunca", "Tengo un bucle que recorre una lista mientras le voy agregando elementos y el programa se queda colgado. ¿Por qué pasa esto y cómo lo soluciono?"),
    ("Convertir una cadena de fecha a un objeto datetime", "Recibo fechas como texto con el formato día/mes/año y necesito calcular cuántos días faltan hasta hoy. ¿Cómo las convierto correctamente?"),
    ("¿Cómo eliminar los elementos duplicados de una lista conservando el orden?", "Si uso set() pierdo el orden original de los elementos. ¿Existe una forma sencilla de quitar duplicados sin cambiar el orden?"),
    ("Problema con las variables globales dentro de una función", "Cuando intento modificar un contador global dentro de una función obtengo UnboundLocalError. ¿Cómo se debe hacer correctamente?"),
    ("¿Cuál es la mejor manera de leer un archivo línea por línea?", "El archivo pesa varios gigas y no cabe en memoria. Necesito procesar cada línea y guardar algunas en otro archivo."),
    ("Cómo hacer una petición HTTP con encabezados personalizados", "Estoy usando la librería requests y necesito enviar un token de autorización en cada petición a la API. ¿Dónde se ponen los encabezados?"),
    ("Mi expresión regular no encuentra los números de teléfono", "Intento extraer números con el formato 555-1234 de un texto largo, pero la expresión regular devuelve una lista vacía. ¿Qué está mal en el patrón?"),
    ("¿Cómo unir dos DataFrames por una columna común?", "Tengo una tabla de clientes y otra de pedidos, ambas con la columna id_cliente. Quiero combinarlas para ver los pedidos de cada cliente."),
    ("Diferencia entre == y is al comparar cadenas", "En algunos casos la comparación con is devuelve verdadero y en otros falso, aunque las cadenas parecen iguales. ¿Por qué ocurre esto?"),
    ("¿Cómo crear un entorno virtual e instalar dependencias?", "Es mi primer proyecto y quiero que las librerías no se mezclen con las del sistema. ¿Qué comandos debo usar en Windows?"),
    ("La página no se actualiza después de cambiar el código JavaScript", "Modifico el archivo y recargo el navegador, pero sigue ejecutándose la versión anterior del código. ¿Es un problema de caché?"),
    ("¿Cómo esperar a que terminen varias promesas en JavaScript?", "Hago varias llamadas a la API dentro de un bucle y necesito continuar solo cuando todas hayan terminado. ¿Debo usar async y await?"),
    ("Error al hacer push en git: los cambios fueron rechazados", "Al intentar subir mis cambios me dice que la rama remota tiene commits que no tengo. No quiero perder mi trabajo. ¿Qué debo hacer?"),
    ("¿Cómo calcular el promedio de una columna agrupando por otra?", "Tengo ventas por tienda y por mes y quiero el promedio mensual de cada tienda usando pandas."),
    ("Excepción de índice fuera de rango al recorrer una matriz", "Recorro una matriz con dos bucles anidados y a veces obtengo IndexError. Creo que confundo las filas con las columnas."),
    ("Cómo programar una tarea que se ejecute todos los días", "Necesito que un script de copia de seguridad se ejecute cada noche a las dos en un servidor Linux. ¿Uso cron o hay otra opción?"),
    ("¿Por qué la suma de decimales da un resultado inexacto?", "Al sumar 0.1 y 0.2 obtengo 0.30000000000000004. Estoy haciendo una aplicación de facturación y necesito resultados exactos."),
    ("¿Cómo leer un archivo JSON y acceder a sus claves anidadas?", "El archivo tiene una lista de usuarios con su dirección dentro de otro objeto. No sé cómo obtener la ciudad de cada usuario."),
]
RU = [
    ("Как развернуть список в Python?", "У меня есть список чисел, и мне нужно пройти по нему в обратном порядке, не изменяя исходный список. Как это сделать правильно?"),
    ("Ошибка кодировки при чтении CSV файла", "При открытии файла через pandas появляется UnicodeDecodeError. Файл сохранён из Excel и содержит русские буквы. Какой параметр нужно указать?"),
    ("Почему функция возвращает None?", "Я написал рекурсивную функцию, которая суммирует элементы списка, но вместо результата всегда получаю None. Что я делаю не так?"),
    ("Как отсортировать словарь по значениям", "Нужно вывести самые частые слова в тексте. У меня есть словарь со словами и количеством, но я не знаю, как отсортировать его по убыванию."),
    ("Чем список отличается от кортежа", "Я изучаю Python и не понимаю, когда лучше использовать кортеж вместо списка. Есть ли разница в скорости работы?"),
    ("Не удаётся подключиться к базе данных PostgreSQL из Django", "Локально всё работает, но на сервере подключение падает с ошибкой аутентификации пользователя. Пароль я уже проверил несколько раз."),
    ("Как проверить, существует ли файл, перед открытием?", "Хочу, чтобы программа не падала, если файла нет в папке. Лучше ловить исключение или проверять заранее?"),
    ("Цикл for никогда не заканчивается", "Я прохожу по списку и одновременно добавляю в него элементы, и программа зависает. Почему так происходит и как это исправить?"),
    ("Преобразовать строку с датой в объект datetime", "Я получаю даты в виде текста в формате день.месяц.год и мне нужно посчитать, сколько дней осталось до сегодняшнего дня."),
    ("Как удалить дубликаты из списка, сохранив порядок?", "Если использовать set(), порядок элементов теряется. Есть ли простой способ убрать повторы, не меняя порядок?"),
    ("Проблема с глобальной переменной внутри функции", "Когда я пытаюсь изменить глобальный счётчик внутри функции, получаю UnboundLocalError. Как сделать это правильно?"),
    ("Как лучше всего читать файл построчно?", "Файл весит несколько гигабайт и не помещается в память. Мне нужно обработать каждую строку и часть из них записать в другой файл."),
    ("Как отправить HTTP запрос со своими заголовками", "Я использую библиотеку requests, и мне нужно передавать токен авторизации в каждом запросе к API. Куда добавить заголовки?"),
    ("Регулярное выражение не находит номера телефонов", "Пытаюсь извлечь номера вида 555-1234 из длинного текста, но регулярное выражение возвращает пустой список. Что не так с шаблоном?"),
    ("Как объединить два DataFrame по общему столбцу?", "У меня есть таблица клиентов и таблица заказов, в обеих есть столбец id_клиента. Хочу соединить их, чтобы видеть заказы каждого клиента."),
    ("Разница между == и is при сравнении строк", "Иногда сравнение через is возвращает истину, а иногда ложь, хотя строки выглядят одинаково. Почему так происходит?"),
    ("Как создать виртуальное окружение и установить зависимости?", "Это мой первый проект, и я не хочу, чтобы библиотеки смешивались с системными. Какие команды нужно выполнить в Windows?"),
    ("Страница не обновляется после изменения кода на JavaScript", "Я меняю файл и перезагружаю браузер, но выполняется старая версия кода. Это проблема кэша?"),
    ("Как дождаться выполнения нескольких промисов в JavaScript?", "Я делаю несколько запросов к API в цикле и хочу продолжить только тогда, когда все они завершатся. Нужно использовать async и await?"),
    ("Ошибка при git push: изменения отклонены", "При попытке отправить изменения git пишет, что во внешней ветке есть коммиты, которых у меня нет. Я не хочу потерять свою работу."),
    ("Как посчитать среднее значение столбца с группировкой?", "У меня есть продажи по магазинам и месяцам, и я хочу получить среднее за месяц для каждого магазина с помощью pandas."),
    ("Исключение выхода за границы индекса при обходе матрицы", "Я обхожу матрицу двумя вложенными циклами и иногда получаю IndexError. Кажется, я путаю строки и столбцы."),
    ("Как запланировать задачу, которая запускается каждый день", "Мне нужно, чтобы скрипт резервного копирования запускался каждую ночь в два часа на сервере Linux. Использовать cron или есть другой способ?"),
    ("Почему сумма дробных чисел получается неточной?", "При сложении 0.1 и 0.2 я получаю 0.30000000000000004. Я пишу программу для выставления счетов, и мне нужны точные результаты."),
    ("Как прочитать JSON файл и получить вложенные ключи?", "В файле список пользователей, у каждого адрес внутри другого объекта. Не понимаю, как получить город каждого пользователя."),
]

if __name__ == "__main__":
    out = Path(__file__).with_name("other_languages.jsonl")
    rows = [{"language": "es", "question": f"{t}\n\n{b}"} for t, b in ES] + \
           [{"language": "ru", "question": f"{t}\n\n{b}"} for t, b in RU]
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"{len(rows)} questions -> {out}")
